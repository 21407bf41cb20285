export { mountDomain, isMounted, mountedPaths, type MountedView, type MountOptions } from './fuse-adapter.js';
export { errnoFromName, errnoOf, EIO } from './errno.js';
export { parseCacheMode, formatCacheMode, DEFAULT_AUTO_MS, type CacheMode } from './cache-mode.js';
export { mountPointProblem } from './mount-point.js';
