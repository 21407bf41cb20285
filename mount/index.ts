export { mountDomain, isMounted, mountedPaths, type MountedView, type MountOptions } from './fuse-adapter.js';
export { errnoFromName, errnoOf, EIO } from './errno.js';
