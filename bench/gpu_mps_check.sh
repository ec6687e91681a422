#!/usr/bin/env bash
# GPU check of issue 12 (MPS shares), one short run on a GPU without MIG (docs/gpu-verification.md).
#
#   OUT=/tmp/out bash bench/gpu_mps_check.sh       # from the repository root (or a copy of it)
#
# Changes no GPU setting: only read-only nvidia-smi queries, CUDA inference, and the MPS control
# daemon started and stopped as a process (`nvidia-cuda-mps-control -d` / `echo quit | …`).
# Wheels in ./whl (pydantic, ultralytics, … where the machine lacks them) are installed to /tmp/site.
# Writes under $OUT: log.txt, facts.txt, pair.json, profiles.tgz (one JSON per service and share).
set -u
OUT=${OUT:-/tmp/clover-gpu-out}
mkdir -p "$OUT" /tmp/prof
cd "$(dirname "$0")/.."
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 YOLO_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 CLOVER_CACHE_DIR=/tmp/clover-cache
export PYTHONPATH=$PWD
if ls whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
fi
step() { echo; echo "=== $* ($(date +%T))"; }
pack() { tar czf "$OUT/profiles.tgz" -C /tmp/prof . 2>/dev/null; }

step "GPU facts (read-only)"
{
  nvidia-smi -L
  nvidia-smi --query-gpu=index,name,uuid,memory.total,mig.mode.current,driver_version,power.limit --format=csv
  python3 -c "import torch; p = torch.cuda.get_device_properties(0); print('torch', torch.__version__, p.name, 'SMs', p.multi_processor_count, 'bytes', p.total_memory)"
  command -v nvidia-cuda-mps-control nvidia-cuda-mps-server
} 2>&1 | tee "$OUT/facts.txt"

export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
step "MPS daemon before start (expect: not running)"
echo get_server_list | timeout 10 nvidia-cuda-mps-control; echo "front-end rc=$?"
python3 -c "from mig.mps import MpsControl; print(MpsControl().status())"
step "start the MPS control daemon"
nvidia-cuda-mps-control -d; echo "start rc=$?"
trap 'echo quit | timeout 20 nvidia-cuda-mps-control' EXIT
sleep 1
python3 -c "from mig.mps import MpsControl; print(MpsControl().status())"
python3 -c "from gpu_node.node_check import check_nvml; from mig.mps import MpsControl; print(check_nvml(daemon=MpsControl()))"
python3 -m gpu_node.cli mig list --backend nvidia-smi --partition mps --state /tmp/mps-state.json --leases /tmp/leases.json

P="--device cuda --batches 1,8 --duration 0.6 --warmup 0.2 --mps-percent 14,29,43,57,100"
step "profile EfficientNet under MPS shares"
timeout --kill-after=5 100 python3 -m gpu_node.cli profile --service efficientnet --variants b0,b4,b7 $P --out /tmp/prof/h200_effnet.json; pack
step "profile ALBERT under MPS shares"
timeout --kill-after=5 100 python3 -m gpu_node.cli profile --service albert --variants base,xxlarge $P --out /tmp/prof/h200_albert.json; pack
step "two replicas on two MPS shares at once"
timeout --kill-after=5 70 python3 bench/gpu_mps_pair.py --out "$OUT/pair.json" --seconds 5 > /dev/null
step "profile YOLO under MPS shares (needs ultralytics)"
timeout --kill-after=5 80 python3 -m gpu_node.cli profile --service yolo --variants yolo11n,yolo11x $P --out /tmp/prof/h200_yolo.json; pack

step "stop the MPS control daemon"
trap - EXIT
echo quit | timeout 20 nvidia-cuda-mps-control; echo "quit rc=$?"
sleep 1
echo get_server_list | timeout 10 nvidia-cuda-mps-control; echo "after quit: front-end rc=$?"
cp "$CUDA_MPS_LOG_DIRECTORY/control.log" "$OUT/mps_control.log" 2>/dev/null
ls -la /tmp/prof
step "done"
