# Cross-compiling for 64-bit Arm Linux with Debian's gcc-aarch64-linux-gnu
# (sysroot /usr/aarch64-linux-gnu from libc6-dev-arm64-cross; arm64 -dev
# packages installed through dpkg multiarch land in /usr/lib/aarch64-linux-gnu).
# Binaries run on x86 under `qemu-aarch64 -L /usr/aarch64-linux-gnu`
# (tools/cross-neon.sh does all of it).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64;-L;/usr/aarch64-linux-gnu)

# Libraries and headers: the cross sysroot, then the multiarch arm64 paths;
# programs (python, ...) from the host.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_LIBRARY_PATH /usr/lib/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
