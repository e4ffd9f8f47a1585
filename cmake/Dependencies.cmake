# Third-party libraries, all from Debian packages. Each failure names the
# package that provides the missing piece so that a fresh machine can be fixed
# with one apt-get line (tools/install-deps.sh installs all of them).

include(FindPkgConfig)

function(tlm_require_lib var lib header pkg)
  find_library(${var}_LIB NAMES ${lib})
  find_path(${var}_INC NAMES ${header})
  if(NOT ${var}_LIB OR NOT ${var}_INC)
    message(FATAL_ERROR "trimlm: ${lib} (${header}) not found; install the Debian package '${pkg}' (or run tools/install-deps.sh)")
  endif()
  add_library(tlm::${lib} UNKNOWN IMPORTED)
  set_target_properties(tlm::${lib} PROPERTIES
    IMPORTED_LOCATION "${${var}_LIB}"
    INTERFACE_INCLUDE_DIRECTORIES "${${var}_INC}")
endfunction()

find_package(OpenMP)
if(NOT OpenMP_C_FOUND)
  message(FATAL_ERROR "trimlm: OpenMP for C not found; install the Debian package 'libgomp1' (part of gcc)")
endif()

tlm_require_lib(DNNL     dnnl      dnnl.h            libdnnl-dev)
tlm_require_lib(MIMALLOC mimalloc  mimalloc.h        libmimalloc-dev)
tlm_require_lib(CJSON    cjson     cjson/cJSON.h     libcjson-dev)
tlm_require_lib(PCRE2    pcre2-8   pcre2.h           libpcre2-dev)
tlm_require_lib(CURL     curl      curl/curl.h       libcurl4-openssl-dev)
tlm_require_lib(ARCHIVE  archive   archive.h         libarchive-dev)
tlm_require_lib(CRYPTO   crypto    openssl/sha.h     libssl-dev)
tlm_require_lib(XXHASH   xxhash    xxhash.h          libxxhash-dev)
tlm_require_lib(EDIT     edit      editline/readline.h libedit-dev)
tlm_require_lib(MHD      microhttpd microhttpd.h      libmicrohttpd-dev)
