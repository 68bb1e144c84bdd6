#!/bin/bash
# One Slurm array task of a grid: submitted by `python -m trafficsigns grid --slurm` (`make cluster-grid`),
# which sets the variables below and the resources (sbatch options); not meant to be sbatch'ed by hand.
#
#   MODE=data  task i runs download → prepare → augment for data config i of the grid (rows that differ
#              only in model/train params share one), so that the rows restore them from DVC's run-cache
#   MODE=row   task i runs grid row i as the experiment grid-<array job id>-<i> and pushes it back:
#              its git ref to $REPO, its outputs to the shared DVC cache or the DVC remote
#
# Each task works in its own clone of $REPO at $COMMIT (node-local scratch, deleted at the end).
#SBATCH --job-name=trafficsigns-grid
set -euo pipefail

: "${SLURM_ARRAY_TASK_ID:?run through python -m trafficsigns grid --slurm (an array job)}"
: "${REPO:?}" "${COMMIT:?}" "${TASKS:?}" "${MODE:?}"  # TASKS: one line per index, "<i>\t<dvc exp run -S args>"
DVC_CACHE=${DVC_CACHE:-}  # a shared DVC cache folder; empty: the DVC remote DVC_REMOTE (node-local cache)
DVC_REMOTE=${DVC_REMOTE:-}
I=$SLURM_ARRAY_TASK_ID
STATUS=$(dirname "$TASKS")/$MODE-$I.status
NAME=grid-${SLURM_ARRAY_JOB_ID}-$I
START=$(date +%s)
echo "start $START" > "$STATUS"  # then "<exit status> <end> <start>", seconds since the epoch
# A fresh folder of its own: job ids repeat across clusters (and users) sharing a node's scratch.
CLONE=$(mktemp -d "${SLURM_TMPDIR:-${TMPDIR:-/tmp}}/trafficsigns-$MODE-${SLURM_ARRAY_JOB_ID}-$I.XXXXXX")
trap 'rc=$?; echo "$rc $(date +%s) $START" > "$STATUS"; cd / && rm -rf "$CLONE"' EXIT

# module load python/3.11 cuda/12      # site-specific
if [ -n "${VENV:-}" ]; then
  source "$VENV/bin/activate"
else  # one venv per node and lock file, installed by the first task that needs it, under a lock
  HASH=$(cat "$REPO/requirements.lock" | sha256sum | cut -c1-12)
  VENV=${VENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/trafficsigns}/venv-$(hostname -s)-$HASH
  mkdir -p "$(dirname "$VENV")"
  (
    flock 9
    if [ ! -e "$VENV/.installed" ]; then
      python3 -m venv "$VENV"
      "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REPO/requirements.lock"
      touch "$VENV/.installed"
    fi
  ) 9>"$VENV.lock"
  source "$VENV/bin/activate"
fi
export DVC_NO_ANALYTICS=1 PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the dependency folders' hashes

git clone --quiet --no-checkout "$REPO" "$CLONE"
cd "$CLONE"
git checkout --quiet --detach "$COMMIT"
python -m trafficsigns.experiments.slurm configure "$REPO" "$DVC_CACHE" "$DVC_REMOTE"

ARGS=$(awk -F'\t' -v i="$I" '$1 == i { print $2 }' "$TASKS")
[ -n "$ARGS" ] || { echo "no task $I in $TASKS" >&2; exit 2; }
PULL=$([ -z "$DVC_CACHE" ] && echo --pull || true)  # remote: its run-cache and outputs, when it has them
echo "$MODE $I on $(hostname) at $COMMIT: $ARGS"
if [ "$MODE" = data ]; then
  # `dvc repro`, not `dvc exp run`: saving an experiment needs every output dvc.lock names, and later
  # stages' are in no cache yet on a fresh remote. The run-cache records each data stage for the rows.
  eval "python -m trafficsigns.experiments.slurm set-params $ARGS"
  dvc repro $PULL augment </dev/null
  if [ -z "$DVC_CACHE" ]; then
    dvc push --run-cache --with-deps augment
  fi
else
  eval "dvc exp run $PULL -n $NAME $ARGS" </dev/null
  if [ -n "$DVC_CACHE" ]; then
    dvc exp push --no-cache origin "$NAME"  # its outputs are in the shared cache already
  else
    dvc exp push --run-cache origin "$NAME"
  fi
fi
echo "$MODE $I done"
