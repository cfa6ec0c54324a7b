#!/usr/bin/env bash
# The runs that replicate the RankSEG-RMA tables (mIoU^I; argmax, then the experiment's own
# rankseg_rma, per dataset and model), then the tables themselves.
#
# Needs a machine with the data (DATA.md) and the trained checkpoints in Hugging Face layout
# (config.json + model.safetensors), one folder per model and dataset:
#   CKPT_DIR/<model_yaml>.<data_yaml>/
# The paper's models were trained with the experiment code (`main.py` with --loss_yaml ce,
# --schedule_yaml 40k_iters / 80k_iters, --optim_yaml adamw_lr6e-5); exp loads the
# SegFormer and UperNet-ConvNeXt architectures. Runs whose checkpoint folder is missing are
# listed and skipped; finished runs are not redone (exp is a no-op on them).
#
#   DATA_DIR=/data CKPT_DIR=/ckpt OUT_DIR=/out scripts/paper_tables.sh
#   PUBLIC=1 DATA_DIR=/data OUT_DIR=/out scripts/paper_tables.sh   # public hub checkpoints
set -euo pipefail

DATA_DIR=${DATA_DIR:?set DATA_DIR to the prepared datasets (see DATA.md)}
OUT_DIR=${OUT_DIR:-results/paper}
CKPT_DIR=${CKPT_DIR:-}
RANKSEG=${RANKSEG:-target/release/rankseg}
PREDICTIONS=${PREDICTIONS:-"argmax rankseg_rma"}
# The SegFormer size of the natural-image table (any of segformer_mit_b0..b5).
SEGFORMER=${SEGFORMER:-segformer_mit_b5}
[ -x "$RANKSEG" ] || cargo build --release

run() { # model_yaml data_yaml [extra exp flags...]
  local model=$1 data=$2; shift 2
  local dir="$OUT_DIR/$model.$data"
  for predict in $PREDICTIONS; do
    echo "== $model on $data: $predict"
    "$RANKSEG" exp --test-only --data_dir "$DATA_DIR" --output_dir "$dir" \
      --model_yaml "$model" --data_yaml "$data" --loss_yaml ce --schedule_yaml 40k_iters \
      --optim_yaml adamw_lr6e-5 --test_yaml test_iou --predict_yaml "$predict" "$@"
  done
  RUNS+=("$dir")
}

trained() { # model_yaml data_yaml: a run with the experiment-trained checkpoint
  local ckpt="$CKPT_DIR/$1.$2"
  if [ -z "$CKPT_DIR" ] || [ ! -f "$ckpt/config.json" ]; then
    echo "-- skipped $1 on $2: no checkpoint at $ckpt" >&2
    return
  fi
  run "$1" "$2" --model_checkpoint "$ckpt"
}

RUNS=()
if [ "${PUBLIC:-0}" = 1 ]; then
  # Public checkpoints (not the paper's models, same architectures): the hub's ADE20K and
  # Cityscapes fine-tunes, fetched into the Hugging Face cache on first use.
  for b in 0 1 2 3 4 5; do run "segformer_b${b}_ade" ade20k; done
  for b in 0 1 2 3 4 5; do run "segformer_b${b}_cityscapes" cityscapes; done
  for size in tiny small base large xlarge; do run "upernet_convnext_$size" ade20k; done
  "$RANKSEG" table --runs "${RUNS[@]}" --metric mIoUI --baseline argmax --out "$OUT_DIR/public_mIoUI"
  exit 0
fi

# Natural images: SegFormer and UPerNet (ConvNeXt-B) on ADE20K, Cityscapes, PASCAL VOC.
for model in "$SEGFORMER" upernet_convnext_base.fb_in22k_ft_in1k_384; do
  for data in ade20k cityscapes pascal_voc; do trained "$model" "$data"; done
done
NATURAL=("${RUNS[@]}")

# Medical images: LiTS and KiTS, five folds each (exp reports each fold, averaged over its
# cases). The paper's medical table uses DeepLabV3+ and UNet, which exp cannot load yet
# (SegFormer and UPerNet only): these runs use SegFormer/UPerNet checkpoints trained on the
# folds, the closest replication available.
RUNS=()
for model in "$SEGFORMER" upernet_convnext_base.fb_in22k_ft_in1k_384; do
  for data in lits kits; do
    for fold in 0 1 2 3 4; do trained "$model" "${data}_fold$fold"; done
  done
done
MEDICAL=("${RUNS[@]}")

[ ${#NATURAL[@]} -gt 0 ] && "$RANKSEG" table --runs "${NATURAL[@]}" --metric mIoUI --out "$OUT_DIR/natural_mIoUI"
[ ${#MEDICAL[@]} -gt 0 ] && "$RANKSEG" table --runs "${MEDICAL[@]}" --metric mIoUI --out "$OUT_DIR/medical_mIoUI"
echo "tables in $OUT_DIR"
