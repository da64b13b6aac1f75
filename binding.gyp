{
  "targets": [
    {
      "target_name": "flannel_native",
      "sources": [
        "native/addon.cc",
        "native/netlink.cc",
        "native/nlmsg.cc",
        "native/bpf.cc",
        "native/udp.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "libraries": ["-lmnl", "-lbpf"]
    }
  ]
}
