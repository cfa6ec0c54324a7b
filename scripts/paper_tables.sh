#!/usr/bin/env bash
# The runs that replicate the RankSEG-RMA tables (mIoU^I; argmax, then the experiment's own
# rankseg_rma, per dataset and model), then the tables themselves.
#
# Needs a machine with the data (DATA.md) and the trained checkpoints, one folder per model
# and dataset: the experiment's own output folder (`main.py` writes
# `<model_yaml>.<data_yaml>.<loss>.<schedule>.<optim>/checkpointNNN.pth`; the newest is used)
# or a Hugging Face layout folder (config.json + model.safetensors), found as
#   CKPT_DIR/<model_yaml>.<data_yaml>/  or  CKPT_DIR/<model_yaml>.<data_yaml>.*/
# The paper's models were trained with the experiment code (`main.py` with --loss_yaml ce);
# exp builds every one of its architectures (DeepLabV3+, UNet, SegFormer, UPerNet, ...) from
# the model yaml and loads its .pth checkpoints. Runs whose checkpoint is missing are listed
# and skipped; finished runs are not redone (exp is a no-op on them).
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
# The medical table's DeepLabV3+ and UNet (any yaml under configs/models/).
DEEPLAB=${DEEPLAB:-deeplabv3plus_resnet50d}
UNET=${UNET:-unet_resnet50d}
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

checkpoint_of() { # model_yaml data_yaml: the checkpoint to evaluate, or nothing
  local dir
  for dir in "$CKPT_DIR/$1.$2" "$CKPT_DIR/$1.$2".*; do
    [ -d "$dir" ] || continue
    if [ -f "$dir/config.json" ]; then echo "$dir"; return; fi
    # main.py's checkpointNNN.pth (or ours, .safetensors): the highest epoch.
    local latest
    latest=$(ls "$dir" | grep -E '^checkpoint[0-9]+\.(pth|safetensors)$' \
      | sed -E 's/^checkpoint([0-9]+)\.(.*)$/\1 &/' | sort -n | tail -1 | cut -d' ' -f2)
    if [ -n "$latest" ]; then echo "$dir/$latest"; return; fi
  done
}

trained() { # model_yaml data_yaml: a run with the experiment-trained checkpoint
  local ckpt=""
  [ -n "$CKPT_DIR" ] && ckpt=$(checkpoint_of "$1" "$2")
  if [ -z "$ckpt" ]; then
    echo "-- skipped $1 on $2: no checkpoint under ${CKPT_DIR:-(CKPT_DIR unset)}/$1.$2" >&2
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

# Medical images: DeepLabV3+ and UNet on LiTS and KiTS, five folds each (exp reports each
# fold, averaged over its cases).
RUNS=()
for model in "$DEEPLAB" "$UNET"; do
  for data in lits kits; do
    for fold in 0 1 2 3 4; do trained "$model" "${data}_fold$fold"; done
  done
done
MEDICAL=("${RUNS[@]}")

[ ${#NATURAL[@]} -gt 0 ] && "$RANKSEG" table --runs "${NATURAL[@]}" --metric mIoUI --out "$OUT_DIR/natural_mIoUI"
[ ${#MEDICAL[@]} -gt 0 ] && "$RANKSEG" table --runs "${MEDICAL[@]}" --metric mIoUI --out "$OUT_DIR/medical_mIoUI"
echo "tables in $OUT_DIR"
