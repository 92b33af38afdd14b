#!/usr/bin/env bash
# Soak run: build, then
#   1. the property-based fault schedules (test/property/fault-schedules.test.ts), FC_RUNS schedules in all
#      (default 10000), split across 2 parallel vitest processes with distinct seeds; the summary gives how many
#      fired a socket fault and, per phase, where the faults landed and how those schedules ended;
#   2. the protocol and NBD fuzzers with FUZZ_INPUTS=1000000 each;
#   3. every other fast-check property test with FC_RUNS scaled up moderately (see step 3 for the three groups).
# Prints each seed and run count as it starts, a summary at the end, and exits non-zero if anything failed.
#
#   npm run soak                          # the full soak (~40+ minutes for 10000 schedules)
#   FC_RUNS=200 npm run soak              # a quick check of the script itself
#   FC_SEED=123 npm run soak              # replay: process 1 uses seed 123, process 2 seed 124
# Env: FC_RUNS (schedules, default 10000), FC_SEED (base seed), FUZZ_INPUTS (default 1000000),
#      PROPERTY_FC_RUNS (default 1000: 5x), PROPERTY_ABS_FC_RUNS (default 1000), PROPERTY_NET_FC_RUNS (default 200: 8x),
#      SOAK_LOG_DIR (default: a fresh temp dir; every step's full output is kept there),
#      SOAK_STEPS (default schedules,fuzz,properties: which steps run; e.g. SOAK_STEPS=schedules).
set -u -o pipefail
cd "$(dirname "$0")/.."

SCHEDULES=${FC_RUNS:-10000}
FUZZ=${FUZZ_INPUTS:-1000000}
PROP_RUNS=${PROPERTY_FC_RUNS:-1000}
BASE_SEED=${FC_SEED:-$(( (RANDOM << 16 | RANDOM) & 0x7fffffff ))}
LOG_DIR=${SOAK_LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/postcopy-soak.XXXXXX")}
mkdir -p "$LOG_DIR"
VITEST=(npx --no-install vitest run --reporter=default)

for v in SCHEDULES FUZZ PROP_RUNS BASE_SEED; do
  if ! [[ ${!v} =~ ^[0-9]+$ ]]; then echo "soak: $v must be a non-negative integer, got '${!v}'" >&2; exit 2; fi
done

STEPS=${SOAK_STEPS:-schedules,fuzz,properties}
want() { [[ ",$STEPS," == *",$1,"* ]]; }

declare -a SUMMARY=()
FAILED=0
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
note() { SUMMARY+=("$1"); }

echo "soak: logs in $LOG_DIR"

# ---- build
echo "soak: building"
if ! npm run --silent build >"$LOG_DIR/build.log" 2>&1; then
  cat "$LOG_DIR/build.log"
  echo "soak: build FAILED" >&2
  exit 1
fi

# ---- 1. fault schedules, two processes
if want schedules; then
  RUNS1=$(( (SCHEDULES + 1) / 2 ))
  RUNS2=$(( SCHEDULES / 2 ))
  SEED1=$BASE_SEED
  SEED2=$(( (BASE_SEED + 1) & 0x7fffffff ))
  echo "soak: fault schedules: $SCHEDULES in all; process 1: FC_SEED=$SEED1 FC_RUNS=$RUNS1; process 2: FC_SEED=$SEED2 FC_RUNS=$RUNS2"
  t0=$(now)
  pids=()
  for i in 1 2; do
    seed_var="SEED$i"; runs_var="RUNS$i"
    if [ "${!runs_var}" -eq 0 ]; then pids+=(""); continue; fi
    FC_SEED=${!seed_var} FC_RUNS=${!runs_var} "${VITEST[@]}" test/property/fault-schedules.test.ts >"$LOG_DIR/schedules-$i.log" 2>&1 &
    pids+=($!)
  done
  for i in 1 2; do
    pid=${pids[$((i - 1))]}
    seed_var="SEED$i"; runs_var="RUNS$i"
    [ -z "$pid" ] && continue
    if wait "$pid"; then status=PASS; else status=FAIL; FAILED=1; fi
    line=$(sed 's/\x1b\[[0-9;]*m//g' "$LOG_DIR/schedules-$i.log" | grep -ao 'fault schedules: [0-9]* runs (seed [-0-9]*): [0-9]* complete, [0-9]* rolled back; [0-9]* fired a socket fault ([0-9.]* %)' | tail -1)
    [ -z "$line" ] && line="no outcome line (see $LOG_DIR/schedules-$i.log)"
    note "schedules process $i: $status  FC_SEED=${!seed_var} FC_RUNS=${!runs_var}  $line"
    if [ "$status" = FAIL ]; then
      echo "---- schedules process $i failed; the end of its output:"
      grep -a -E 'replay with|Counterexample|AssertionError|Error:' "$LOG_DIR/schedules-$i.log" | head -20
      tail -40 "$LOG_DIR/schedules-$i.log"
    fi
  done
  t1=$(now)
  # Where the faults landed, both processes summed: per phase, faults aimed at it, those of them that fired in it,
  # every fault that fired in it, and the outcomes of the schedules whose first fault fired in it.
  table=$(cat "$LOG_DIR"/schedules-*.log 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' \
    | grep -a -E '^fault phase [a-z-]+: aimed [0-9]+, landed [0-9]+, fired [0-9]+, complete [0-9]+, rolled back [0-9]+$' \
    | awk '{ p = $3; sub(":", "", p); if (!(p in a)) order[n++] = p; a[p] += $5; l[p] += $7; f[p] += $9; c[p] += $11; r[p] += $14 }
           END { for (i = 0; i < n; i++) { p = order[i]; printf "  %-17s aimed %6d  landed %6d  fired %6d  complete %6d  rolled back %6d\n", p, a[p], l[p], f[p], c[p], r[p] } }')
  fired=$(cat "$LOG_DIR"/schedules-*.log 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' \
    | grep -a -o 'fault schedules: [0-9]* runs (seed [-0-9]*): [0-9]* complete, [0-9]* rolled back; [0-9]* fired a socket fault' \
    | awk '{ runs += $3; fired += $12 } END { if (runs > 0) printf "%d of %d schedules fired a socket fault (%.1f %%)", fired, runs, 100 * fired / runs }')
  [ -n "$fired" ] && note "schedules: $fired"
  if [ -n "$table" ]; then
    note "schedules: where the faults landed (both processes; 'none' = schedules where no socket fault fired):"
    while IFS= read -r l; do note "$l"; done <<<"$table"
  fi
  elapsed=$(secs "$t0" "$t1")
  per=$(awk -v s="$elapsed" -v n="$SCHEDULES" 'BEGIN { if (n > 0) printf "%.0f ms wall per schedule, ~%.0f ms each within its process", s * 1000 / n, s * 2000 / n; else print "none run" }')
  note "schedules: $SCHEDULES in ${elapsed}s wall on 2 processes ($per)"
fi

# ---- 2. fuzzers
if want fuzz; then
  echo "soak: fuzzers: FUZZ_INPUTS=$FUZZ FC_SEED=$BASE_SEED (protocol frames; NBD server and client decoders)"
  t0=$(now)
  if FUZZ_INPUTS=$FUZZ FC_SEED=$BASE_SEED "${VITEST[@]}" test/protocol/fuzz.test.ts test/nbd/fuzz.test.ts >"$LOG_DIR/fuzz.log" 2>&1; then status=PASS; else status=FAIL; FAILED=1; fi
  t1=$(now)
  note "fuzzers: $status in $(secs "$t0" "$t1")s  FUZZ_INPUTS=$FUZZ FC_SEED=$BASE_SEED"
  while IFS= read -r l; do note "  ${l}"; done < <(sed 's/\x1b\[[0-9;]*m//g' "$LOG_DIR/fuzz.log" | grep -ao '[a-z -]*fuzz: [0-9]* inputs in [0-9]* ms ([0-9]*/s), FC_SEED=[-0-9]*')
  if [ "$status" = FAIL ]; then
    echo "---- fuzzers failed; the end of their output:"
    tail -60 "$LOG_DIR/fuzz.log"
  fi
fi

# ---- 3. the other property tests, in three groups by what FC_RUNS means to them:
if want properties; then
  #   relative: files on test/helpers/fc.ts, where FC_RUNS rescales every property (a default-200 property runs FC_RUNS times);
  #   absolute: files on the guest/NBD fc-params helpers, where FC_RUNS is every property's run count;
  #   network:  the NBD client/server property over real sockets (default 25 runs, a fixed 120 s cap): fewer.
  mapfile -t PROPS < <(grep -l -E "from 'fast-check'|from \"fast-check\"|helpers/fc(-params)?\.js" -r test --include='*.test.ts' \
    | grep -v -E '^test/property/fault-schedules\.test\.ts$|fuzz\.test\.ts$' | sort)
  REL=(); ABS=(); NET=()
  for f in "${PROPS[@]}"; do
    if [ "$f" = test/nbd/client-server-property.test.ts ]; then NET+=("$f")
    elif grep -q -E "helpers/fc\.js'" "$f"; then REL+=("$f")
    else ABS+=("$f"); fi
  done
  ABS_RUNS=${PROPERTY_ABS_FC_RUNS:-1000}
  NET_RUNS=${PROPERTY_NET_FC_RUNS:-200}
  run_props() {
    local name=$1 runs=$2; shift 2
    [ "$#" -eq 0 ] && return
    echo "soak: properties ($name): FC_RUNS=$runs FC_SEED=$BASE_SEED: $*"
    local t0 t1 status tests log="$LOG_DIR/properties-$name.log"
    t0=$(now)
    if FC_RUNS=$runs FC_SEED=$BASE_SEED "${VITEST[@]}" "$@" >"$log" 2>&1; then status=PASS; else status=FAIL; FAILED=1; fi
    t1=$(now)
    tests=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -a -E '^\s*Tests\s' | tail -1 | sed 's/^ *//')
    note "properties ($name): $status in $(secs "$t0" "$t1")s  FC_RUNS=$runs FC_SEED=$BASE_SEED  $# files  ${tests}"
    if [ "$status" = FAIL ]; then
      echo "---- property tests ($name) failed:"
      sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -a -E '^ *(FAIL|×)|Error|replay with' | head -30
    fi
  }
  run_props relative "$PROP_RUNS" "${REL[@]}"
  run_props absolute "$ABS_RUNS" "${ABS[@]}"
  run_props network "$NET_RUNS" "${NET[@]}"
fi

# ---- summary
echo
echo "==================== soak summary ===================="
for l in "${SUMMARY[@]}"; do echo "$l"; done
echo "logs: $LOG_DIR"
if [ "$FAILED" -ne 0 ]; then
  echo "soak: FAILED (replay a step with the FC_SEED / FC_RUNS / FUZZ_INPUTS printed above)"
  exit 1
fi
echo "soak: all passed"
