#!/usr/bin/env bash
# Sends ../shared to a lent GPU machine, which has no ../shared of its own.
#
# The device tool carries at most 64 MiB of git-ignored files per call, so the data and weights the
# benchmarks read are packed here into three parts under .device/ (git-ignored, transport only, deleted
# with `rm -rf .device`); each is carried by its own call and stays on the machine while it is warm:
#
#   here:    bash bench/device_pack.sh
#   device:  run(carry=[".device/a"], command="true"), then ".device/b", then ".device/c"
#   device:  export PNEUMOSCAN_SHARED=$(bash bench/device_pack.sh unpack) && python -m bench.compare ...
#
# A copy of the tree has no git folder: name the commit with BENCH_COMMIT=$(git rev-parse HEAD).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pack() {  # pack PART PATH... : copy these paths of ../shared into .device/PART/shared/
    local part=$1 rel
    shift
    for rel in "$@"; do
        mkdir -p ".device/$part/shared/$(dirname "$rel")"
        cp -r "../shared/$rel" ".device/$part/shared/$rel"
    done
    du -sh ".device/$part"
}

unpack() {  # on the device: merge the carried parts into .device/shared and print its path
    local part
    rm -rf .device/shared
    mkdir -p .device/shared
    for part in a b c; do
        [ -d ".device/$part/shared" ] || { echo "missing .device/$part: carry it first" >&2; return 1; }
        cp -rl ".device/$part/shared/." .device/shared/
    done
    echo "$PWD/.device/shared"
}

if [ "${1:-pack}" = unpack ]; then
    unpack
else
    rm -rf .device
    data=data/chest_xray_224
    pack a "$data/train/PNEUMONIA"
    pack b "$data/train/NORMAL" "$data/test" "$data/val" weights/densenet121_imagenet_keras.pth
    pack c weights/resnet50_imagenet_keras_partial.pth
fi
