{
  "targets": [
    {
      "target_name": "volant_native",
      "sources": ["src/addon.cc", "src/errno_error.cc", "src/sockets.cc", "src/netconf.cc", "src/system.cc", "src/device_io.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
