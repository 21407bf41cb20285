{
  "targets": [
    {
      "target_name": "crc32c",
      "sources": ["crc32c.c"],
      "cflags": ["-O3"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
