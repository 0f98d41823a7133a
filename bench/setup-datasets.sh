#!/usr/bin/env bash
# Installs the real-data sets bench/hnsw.js uses, from Debian's packages, when they are missing:
# Fashion-MNIST (gzipped IDX files under /usr/share/datasets/fashion-mnist). Needs root (apt-get).
set -euo pipefail

FASHION_DIR=/usr/share/datasets/fashion-mnist
if [[ -f "$FASHION_DIR/train-images-idx3-ubyte.gz" && -f "$FASHION_DIR/t10k-images-idx3-ubyte.gz" ]]; then
  echo "fashion-mnist: present in $FASHION_DIR"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y dataset-fashion-mnist
ls -l "$FASHION_DIR"
