#!/bin/sh
# Build LazyFS (github.com/dsrhaslab/lazyfs, a FUSE file system that keeps every write
# not yet fsynced in its own cache and can drop it on command: a power cut) into
# $LAZYFS_DIR (default /tmp/lazyfs), never into this repository. Used by bench/powercut.py.
#
# Needs the Debian packages libfuse3-dev fuse3 cmake g++ (apt-get install -y ...).
# Sources: git clones of lazyfs, toml11 (v3.7.1) and spdlog (v1.10.0), from
# $LAZYFS_GIT_BASE (default: a local mirror directory /work/.mirror/<owner>+<name>/repo
# when it exists, else https://github.com/<owner>/<name>). LazyFS's CMake downloads
# toml11 and spdlog with FetchContent; we hand it the local clones instead
# (FETCHCONTENT_SOURCE_DIR_*; lazyfs itself looks for spdlog's headers where FetchContent
# would have put them, so it gets -I), and the build needs no network beyond the clones.
# Prints the path of the lazyfs binary. Idempotent: an existing build is reused.
set -eu
DIR=${LAZYFS_DIR:-/tmp/lazyfs}
BIN=$DIR/lazyfs/lazyfs/build/lazyfs
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
src() {  # owner name -> clone URL
    if [ -n "${LAZYFS_GIT_BASE:-}" ]; then echo "$LAZYFS_GIT_BASE/$1/$2"
    elif [ -d "/work/.mirror/$1+$2/repo" ]; then echo "/work/.mirror/$1+$2/repo"
    else echo "https://github.com/$1/$2"; fi
}
mkdir -p "$DIR"
cd "$DIR"
[ -d lazyfs ] || git clone -q --no-checkout "$(src dsrhaslab lazyfs)" lazyfs
# only what the build needs (the repo's tests/ holds large example traces)
git -C lazyfs checkout -q HEAD -- lazyfs libs
[ -d toml11 ] || git clone -q --branch v3.7.1 "$(src ToruNiina toml11)" toml11 2>/dev/null \
    || { git clone -q "$(src ToruNiina toml11)" toml11 && git -C toml11 checkout -q v3.7.1; }
[ -d spdlog ] || git clone -q --branch v1.10.0 "$(src gabime spdlog)" spdlog 2>/dev/null \
    || { git clone -q "$(src gabime spdlog)" spdlog && git -C spdlog checkout -q v1.10.0; }
JOBS=${LAZYFS_JOBS:-2}
( cd lazyfs/libs/libpcache && mkdir -p build && cd build \
  && cmake -DFETCHCONTENT_FULLY_DISCONNECTED=ON -DFETCHCONTENT_SOURCE_DIR_TOML="$DIR/toml11" \
           -DFETCHCONTENT_SOURCE_DIR_SPDLOG="$DIR/spdlog" -DCMAKE_BUILD_TYPE=Release .. >/dev/null \
  && cmake --build . -j "$JOBS" >/dev/null )
( cd lazyfs/lazyfs && mkdir -p build && cd build \
  && cmake -DLAZYFS_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release \
           -DCMAKE_CXX_FLAGS="-I$DIR/spdlog/include" .. >/dev/null \
  && cmake --build . -j "$JOBS" >/dev/null )
echo "$BIN"
