#!/usr/bin/env bash
# Sim-to-real on the example app, end to end, on one machine (docs/deploy.md, step 6; its
# record: docs/sim_to_real.md, "The whole judgement from scratch"): record, calibrate, train and
# export PPO, hold static pools at three sizes (the fit set), fit the growth laws on them (with
# Celery's CPU law, calgs.yaml, without one, calgn.yaml, and with Celery's CPU as recorded and the
# cores the tasks' sharing reads, calgv.yaml: `adaptflow keep-fit` names the one to keep), then run
# every planner on arrivals no fit saw (the held-out set) and judge the calibrated simulation
# against those runs.
#
#   examples/etl_app/sim_to_real.sh [OUT]       # about an hour and a half; OUT defaults to s2r
#
# Each step writes into OUT and is skipped when its output is already there, so a run cut short
# goes on from the step it stopped in (and a fit set or held-out set cut short, from its run). The steps do not track what they were made from: to redo
# one, delete its output and every later step's.
# It starts its own redis-server (a free port, its data in OUT) and one worker per queue at -c 1,
# and stops them on exit. Run nothing heavy beside it: the live runs measure this machine's CPU.
# Knobs (environment): RATE (6 uploads a second), ROWS ("2000 4000": every session measured since
# 2026-12-05; "4000 8000" saturated parse on the slower of the VMs), REPEAT (2 runs a planner),
# SIMULATE (8 seeds a run), RECORD_SEED (7), FIT_SEEDS ("41 43": the fit set's arrival sequences,
# each run REPEAT times a size; one seed, one sequence, as until 2026-12-06), FIT_RATES (RATE for each
# sequence: one rate per seed of FIT_SEEDS, such as "4.8 6.4"; a fit set at one load cannot tell a
# cost that grows with the load from one that does not, docs/sim_to_real.md, "One sequence at three
# rates"), HELD_SEED (53), HELD (held: the
# held-out set's folder; another name and seed add a held-out set to a finished OUT), FIT (fit:
# the fit set's folder; another name and seed add a fit set of another session, on another day,
# whose laws are written to calg.FIT.yaml, calgs.FIT.yaml, calgn.FIT.yaml and calgv.FIT.yaml), FIT_PLANNERS (the fit set's held sizes:
# 5, 7 and 10 processes, "p1@static:pool=1,p7@static:pool=1,workers=aggregate:2+write:2,p2@static:pool=2";
# the middle one as keda runs, write and aggregate grown; "p1@static:pool=1,p2@static:pool=2" the
# two sizes of sets until 2026-12-05, a line), HELD_DURATION (180: the held-out runs' seconds of
# arrivals; one run of 180 s draws a stage's p95 wait too widely for every cell to agree within 10 %,
# however right the model: docs/sim_to_real.md, "How long a run must be"). Choose the load so that the
# recording does not saturate (calibrate's --validate table below shows it). With two or more
# sessions' fits (every calgs.*.yaml in OUT counts as one: keep a hand-made variant elsewhere),
# laws-by-speed puts them in calbs.yaml (leaving out a fit whose Celery CPU law
# sits at its grid's top), judged at each run's own speeds too.
set -euo pipefail

OUT=$(realpath -m "${1:-s2r}")
RATE=${RATE:-6} ROWS=${ROWS:-"2000 4000"} REPEAT=${REPEAT:-2} SIMULATE=${SIMULATE:-8}
RECORD_SEED=${RECORD_SEED:-7} FIT_SEEDS=${FIT_SEEDS:-${FIT_SEED:-"41 43"}} HELD_SEED=${HELD_SEED:-53} HELD=${HELD:-held} FIT=${FIT:-fit}
FIT_RATES=${FIT_RATES:-} HELD_DURATION=${HELD_DURATION:-180}
FIT_PLANNERS=${FIT_PLANNERS:-"p1@static:pool=1,p7@static:pool=1,workers=aggregate:2+write:2,p2@static:pool=2"}
LAWS=""  # the suffix of this session's fitted scenarios: calgs.yaml for the first fit set, calgs.FIT.yaml after
[ "$FIT" = fit ] || LAWS=".$FIT"
APP=(--app examples.etl_app.app:app --mapping examples/etl_app/mapping.yaml)
read -r -a SEQUENCES <<<"$FIT_SEEDS"
SEQUENCE_RATES=()
for seed in "${SEQUENCES[@]}"; do SEQUENCE_RATES+=("$RATE"); done
[ -z "$FIT_RATES" ] || read -r -a SEQUENCE_RATES <<<"$FIT_RATES"
if [ "${#SEQUENCE_RATES[@]}" -ne "${#SEQUENCES[@]}" ]; then  # checked before any work
  echo "sim_to_real.sh: FIT_RATES '$FIT_RATES' has ${#SEQUENCE_RATES[@]} rates; expected one per seed of FIT_SEEDS '$FIT_SEEDS'" >&2
  exit 2
fi
for rate in "$RATE" "${SEQUENCE_RATES[@]}"; do
  if ! [[ $rate =~ ^[0-9]*\.?[0-9]+$ ]] || [[ $rate =~ ^[0.]+$ ]]; then
    echo "sim_to_real.sh: FIT_RATES (or RATE) '$rate'; expected uploads a second, a number above 0" >&2
    exit 2
  fi
done
if ! [[ $HELD_DURATION =~ ^[1-9][0-9]*$ ]]; then
  echo "sim_to_real.sh: HELD_DURATION '$HELD_DURATION'; expected the held-out runs' seconds, a whole number above 0" >&2
  exit 2
fi
cd "$(dirname "$0")/../.."
mkdir -p "$OUT"

PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export ETL_BROKER_URL=redis://127.0.0.1:$PORT/0 ETL_OUTPUT_DIR=$OUT/etl_output
PIDS=()
stop() { kill -TERM "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT
trap 'exit 130' INT TERM
# a broker of this script's own, empty at every start: a cut-short run's queues are not replayed
redis-server --port "$PORT" --bind 127.0.0.1 --appendonly no --save '' >"$OUT/redis.log" 2>&1 &
PIDS+=($!)
for q in parse validate repair aggregate write; do
  celery -A examples.etl_app.app worker -Q $q -n $q@%h -c 1 -E --pool prefork --loglevel WARNING \
    --without-gossip --without-mingle --without-heartbeat >>"$OUT/workers.log" 2>&1 &
  PIDS+=($!)
done
producer() { PRODUCER=(python -m examples.etl_app.produce --rate "${2:-$RATE}" --duration "${3:-180}" --seed "$1" --rows $ROWS); }
step() { echo "== $(date +%T) $*" >&2; }
python - <<'EOF'  # every worker answers before anything is measured (a slow VM takes seconds to start five)
import time
from examples.etl_app.app import app
deadline = time.monotonic() + 120
while len(app.control.ping(timeout=1.0)) < 5:
    if time.monotonic() > deadline:
        raise SystemExit("sim_to_real.sh: the five workers did not answer within 2 minutes (see workers.log)")
EOF

if [ ! -f "$OUT/rec/done" ]; then
  step "record (seed $RECORD_SEED)"
  rm -rf "$OUT/rec"  # a recording cut short is not resumed
  adaptflow record "${APP[@]}" --out "$OUT/rec" --duration 205 &
  recorder=$!
  PIDS+=($recorder)
  sleep 3
  producer "$RECORD_SEED"
  "${PRODUCER[@]}"
  wait $recorder
  touch "$OUT/rec/done"
fi
if [ ! -f "$OUT/cal.yaml" ]; then
  step "calibrate"
  adaptflow calibrate "$OUT/rec" --out "$OUT/cal.yaml" --cores auto --validate 3
fi
if [ ! -f "$OUT/cals.yaml" ]; then
  # the SLA and the largest pool a user would set (step 3 of deploy.md)
  python - "$OUT" <<'EOF'
import sys, yaml
out = sys.argv[1]
scenario = yaml.safe_load(open(f"{out}/cal.yaml"))
scenario["sla"]["latency"] = 1.0
for stage in scenario["stages"].values():
    stage["workers"]["max"] = 4
open(f"{out}/cals.yaml", "w").write(yaml.safe_dump(scenario, sort_keys=False))
EOF
fi
if [ ! -f "$OUT/ppo/planner.onnx" ]; then
  step "train and export PPO"
  adaptflow train examples/etl_app/train.yaml env.options.scenario="$OUT/cals.yaml" output_dir="$OUT/runs"
  adaptflow export "$(ls -d "$OUT"/runs/ppo_etl_app/*/ | tail -1)" --out "$OUT/ppo"
fi
# The fit set: static pools held at 1, at 1 with aggregate and write at 2, and at 2 from the first
# second (compare-app starts a static planner's run at its pools; fit-growth takes only held
# runs), the sizes interleaved, so that the machine's drift between minutes falls on all alike;
# from three sizes fit-growth's law runs through each (turnaround_growth.points). Each size on two
# arrival sequences, fitted together: a stage's levels settled on one sequence carry its luck
# (docs/sim_to_real.md, "Two arrival sequences in one fit set").
if [ "$FIT" = fit ] && [ -f "$OUT/fit1/compare_app.csv" ] && [ -f "$OUT/fit2/compare_app.csv" ]; then
  FITS=("$OUT/fit1/compare_app.csv" "$OUT/fit2/compare_app.csv")  # an OUT whose sizes ran in blocks (until 2026-12)
else
  if [ -f "$OUT/$FIT/compare_app.csv" ] || [ "${#SEQUENCES[@]}" -eq 1 ]; then
    FIT_DIRS=("$OUT/$FIT") SEQUENCES=("${SEQUENCES[0]}")  # one sequence (every OUT until 2026-12-06)
  else
    FIT_DIRS=()
    for i in "${!SEQUENCES[@]}"; do  # one folder a sequence, named by its rate too where rates were given
      FIT_DIRS+=("$OUT/$FIT/s${SEQUENCES[$i]}${FIT_RATES:+_${SEQUENCE_RATES[$i]}}")
    done
  fi
  FITS=()
  for i in "${!FIT_DIRS[@]}"; do
    FITS+=("${FIT_DIRS[$i]}/compare_app.csv")
    [ ! -f "${FIT_DIRS[$i]}/compare_app.csv" ] || continue
    step "fit set $FIT: static pools held at $FIT_PLANNERS, interleaved (seed ${SEQUENCES[$i]}, ${SEQUENCE_RATES[$i]}/s)"
    producer "${SEQUENCES[$i]}" "${SEQUENCE_RATES[$i]}"
    adaptflow compare-app "${APP[@]}" --scenario "$OUT/cals.yaml" --planners "$FIT_PLANNERS" \
      --repeat "$REPEAT" --simulate 1 --out "${FIT_DIRS[$i]}" -- "${PRODUCER[@]}"
  done
fi
if [ ! -f "$OUT/calg$LAWS.yaml" ]; then
  step "fit the growth laws"
  adaptflow fit-growth "$OUT/cals.yaml" "${FITS[@]}" --out "$OUT/calg$LAWS.yaml"
fi
if [ ! -f "$OUT/calgs$LAWS.yaml" ]; then
  step "fit the growth laws, and the speed the fit set met"
  adaptflow fit-growth "$OUT/cals.yaml" "${FITS[@]}" --session-speed --out "$OUT/calgs$LAWS.yaml"
fi
if [ ! -f "$OUT/calgn$LAWS.yaml" ]; then
  # the same fit with no Celery CPU and the calibration's CPU shares, to judge against the law chosen
  # by their own-runs shares (docs/deploy.md, step 3: "--cpu-law none")
  step "fit the growth laws with no Celery CPU, and the speed the fit set met"
  adaptflow fit-growth "$OUT/cals.yaml" "${FITS[@]}" --session-speed --cpu-law none --out "$OUT/calgn$LAWS.yaml"
fi
if [ ! -f "$OUT/calgv$LAWS.yaml" ]; then
  # Celery's own CPU as the fit set's recordings read it, and the cores its tasks' slowdowns beside
  # each other read with it (docs/deploy.md, step 3: "--visit-cpu recorded --cores sharing"); a fit
  # set recorded before compare-app read the workers' CPU has no figure to hold: said, and skipped
  step "fit the growth laws with Celery's CPU as recorded and the cores the tasks' sharing reads"
  adaptflow fit-growth "$OUT/cals.yaml" "${FITS[@]}" --session-speed --visit-cpu recorded --cores sharing \
    --out "$OUT/calgv$LAWS.yaml" || echo "sim_to_real.sh: no fit with Celery's CPU as recorded (above: why)" >&2
fi
SESSIONS=()
for laws in "$OUT"/calgs.yaml "$OUT"/calgs.*.yaml; do
  [ ! -f "$laws" ] || SESSIONS+=("$laws")
done
if [ "${#SESSIONS[@]}" -ge 2 ]; then  # every session's fit, remade each time (a new one may have come)
  step "the laws by speed of ${#SESSIONS[@]} sessions' fits"
  # a fit whose Celery CPU law sits at its grid's top is left out (docs/deploy.md, step 6), and
  # with fewer than two fits left there are no laws by speed
  rm -f "$OUT/calbs.yaml"
  adaptflow laws-by-speed "$OUT/cals.yaml" "${SESSIONS[@]}" --grid-top skip --out "$OUT/calbs.yaml" ||
    echo "sim_to_real.sh: no laws by speed (above: why)" >&2
fi
if [ ! -f "$OUT/$HELD/compare_app.csv" ]; then
  step "held-out set: every planner (seed $HELD_SEED, $HELD_DURATION s)"
  producer "$HELD_SEED" "$RATE" "$HELD_DURATION"
  adaptflow compare-app "${APP[@]}" --scenario "$OUT/cals.yaml" --repeat "$REPEAT" --simulate 1 --out "$OUT/$HELD" \
    --planners "p2@static:pool=2,keda:target=1,erlang:target_wait=0.02,ppo@onnx:$OUT/ppo" -- "${PRODUCER[@]}"
fi
# The judgement: the fitted scenario on the held-out runs with their own pools, as calibrated
# (the prediction), at the fit set's speed (a prediction for the session the fit set ran in), at
# each run's probed speed (a prediction that reads the machine before and after each run), at
# each run's pulsed speed (one that reads it during the run, where no task ran) and, a
# diagnosis, at each run's own speed (whether a gap is the machine's speed or the model)
judge() {
  local name=$1 scenario=$2
  shift 2
  if [ ! -f "$OUT/$HELD.$name.csv" ]; then
    step "judge: $HELD $name"
    adaptflow resimulate "$OUT/$HELD" --scenario "$OUT/$scenario" --live-pools --simulate "$SIMULATE" "$@" \
      --out "$OUT/$HELD.$name.csv" >"$OUT/$HELD.$name.txt"
  fi
}
# (calgs.yaml's laws are fitted at the fit set's speed, so the last three, which set each run's
# speed, take them; calg.yaml's are fitted at the recording's; calbs.yaml's at each run's speed)
judge judged "calg$LAWS.yaml"
judge judged_session "calgs$LAWS.yaml"
judge judged_probe "calgs$LAWS.yaml" --probe-speed
PULSED=$(grep -c "pulse:" "$OUT/cals.yaml" || true)  # a recording with fewer than 20 idle pulses has none
if [ "$PULSED" -gt 0 ]; then
  judge judged_pulse "calgs$LAWS.yaml" --pulse-speed
fi
judge judged_live_speed "calgs$LAWS.yaml" --live-speed
judge judged_none_session "calgn$LAWS.yaml"
judge judged_none_live_speed "calgn$LAWS.yaml" --live-speed
KEPT=("$OUT/calgs$LAWS.yaml" "$OUT/calgn$LAWS.yaml")
if [ -f "$OUT/calgv$LAWS.yaml" ]; then
  [ "$PULSED" -eq 0 ] || judge judged_recorded_cpu_pulse "calgv$LAWS.yaml" --pulse-speed
  judge judged_recorded_cpu_live_speed "calgv$LAWS.yaml" --live-speed
  KEPT+=("$OUT/calgv$LAWS.yaml")
fi
if [ -f "$OUT/calbs.yaml" ]; then
  [ "$PULSED" -eq 0 ] || judge judged_by_speed_pulse calbs.yaml --pulse-speed
  judge judged_by_speed_live_speed calbs.yaml --live-speed
fi
tail -n 60 "$OUT/$HELD.judged_live_speed.txt"
echo "the fits on their own runs (docs/deploy.md, step 3):"
# (fits of an older fit-growth carry no own-runs line keep-fit reads: it says so, and the judgement stands)
adaptflow keep-fit "${KEPT[@]}" || echo "sim_to_real.sh: no choice between the fits (above: why)" >&2
