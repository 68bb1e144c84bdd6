#!/bin/bash
# One experiment of grid.yaml per Slurm array task, as FIDLE ran its GTSRB grid on Jean Zay.
# NOT RUN where this project was written (no cluster there): read it as a template and adapt the
# #SBATCH lines and the module/venv set-up to your site.
#
#   git commit ...                                              # tasks clone the repo: commit first
#   N=$(python -m trafficsigns grid --list | wc -l)
#   sbatch --array=0-$((N - 1))%4 batch/slurm_experiment.sh     # at most 4 tasks at once
#
# Task i clones the repo at the submitted commit into node-local scratch (no two tasks share a
# workspace, so none of the DVC queue's parallel-worker clashes), runs row i of the grid
# (`python -m trafficsigns grid --row i`) with `dvc exp run`, and pushes the experiment: its git ref
# to the repo it came from, its outputs to the DVC remote (or leaves them in a shared DVC cache).
# Then, in your checkout: `dvc exp pull origin --all-commits` (or `dvc exp list origin`), `make compare`.
#
#SBATCH --job-name=trafficsigns-grid
#SBATCH --output=logs/slurm/%x-%A_%a.out
#SBATCH --time=02:00:00
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --gres=gpu:1
# With --gres=gpu:N (N > 1), train.distribute: auto trains with tf.distribute.MirroredStrategy over the N GPUs.
set -euo pipefail

: "${SLURM_ARRAY_TASK_ID:?submit with sbatch --array=0-N (see the top of this file)}"
REPO=${REPO:-$SLURM_SUBMIT_DIR}                     # a path or git URL every node can reach
COMMIT=${COMMIT:-$(git -C "$SLURM_SUBMIT_DIR" rev-parse HEAD)}
DVC_CACHE=${DVC_CACHE:-}                            # e.g. a shared $WORK/dvc-cache: GTSRB downloaded once
NAME=grid-${SLURM_ARRAY_JOB_ID}-${SLURM_ARRAY_TASK_ID}
CLONE=${SLURM_TMPDIR:-${TMPDIR:-/tmp}}/trafficsigns-$NAME

# module load python/3.11 cuda/12      # site-specific
git clone --quiet "$REPO" "$CLONE"
cd "$CLONE"
git checkout --quiet "$COMMIT"
if [ -n "${VENV:-}" ]; then source "$VENV/bin/activate"; else make .venv/.installed && source .venv/bin/activate; fi
export DVC_NO_ANALYTICS=1
[ -n "$DVC_CACHE" ] && dvc cache dir --local "$DVC_CACHE" && dvc config --local cache.shared group

ARGS=$(python -m trafficsigns grid --row "$SLURM_ARRAY_TASK_ID")    # e.g. -S model.name=v1 -S prepare.mode=RGB
echo "task $SLURM_ARRAY_TASK_ID on $(hostname): dvc exp run -n $NAME $ARGS"
eval "dvc exp run -n $NAME $ARGS" </dev/null

if [ -n "$DVC_CACHE" ]; then
  dvc exp push --no-cache origin "$NAME"             # the outputs are already in the shared cache
else
  dvc exp push origin "$NAME"                        # outputs to the default DVC remote (dvc remote add -d ...)
fi
cd / && rm -rf "$CLONE"
