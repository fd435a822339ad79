#!/usr/bin/env bash
# Postgres's instructions per request for the journal's INSERT, counted by valgrind (repeatable
# whatever else loads the machine, unlike CPU time), for the migrated schema and variants of it.
#
#   KEEP_DB=1 NOPROF=1 npx tsx bench/profile.ts 1000 8       # prints "kept database awooop_prof_…"
#   SRC=awooop_prof_… bash bench/journal-instructions.sh current no-trace-idx trace-start no-tx-idx
#
# A private cluster (initdb in a temporary directory, as the postgres user) gets the kept database's
# schema; each variant's database runs the same SQL in single-user mode under callgrind: 20 and 120
# batches of 25 requests' five real events (the batch the group commit makes at c=32). The
# difference between the two runs, per request, is what a request costs (start-up cancels out).
# Single-user mode reads statements from stdin, which costs more than the wire protocol: compare
# variants with each other, not with the live server's totals.
set -euo pipefail
: "${SRC:?SRC=<database kept by bench/profile.ts with KEEP_DB=1>}"
BIN=$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)
DIR=$(mktemp -d /tmp/awooop-pginstr-XXXX); chown postgres "$DIR"
PORT=$((20000 + RANDOM % 20000))
run_pg() { su postgres -c "$*"; }
run_pg "$BIN/initdb -D $DIR/data -A trust" >/dev/null
run_pg "$BIN/pg_ctl -D $DIR/data -o '-p $PORT -k $DIR' -l $DIR/log start" >/dev/null
P="psql -h $DIR -p $PORT -U postgres -q"
pg_dump -h 127.0.0.1 -U postgres -s "$SRC" > "$DIR/schema.sql"
$P -c "CREATE DATABASE base"; $P -d base -f "$DIR/schema.sql" >/dev/null
for n in 20 120; do
  node --input-type=module -e "
    import pg from 'pg'; import fs from 'node:fs'
    const c = new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:5432/$SRC' }); await c.connect()
    const sample = (await c.query(\"SELECT stream_position AS p, lane AS l, project_id AS j, type AS y, data::text AS d FROM step_journal WHERE stream_id = (SELECT stream_id FROM step_journal WHERE type = 'RunCompleted' LIMIT 1) ORDER BY stream_position\")).rows
    await c.end()
    const hex = (k) => Array.from({ length: k }, () => Math.floor(Math.random() * 16).toString(16)).join('')
    const lines = []
    for (let b = 0; b < $n; b++) {
      const rows = []
      for (let i = 0; i < 25; i++) {
        const s = 'run-' + crypto.randomUUID(), t = hex(32), o = new Date().toISOString()
        for (const e of sample) rows.push(JSON.stringify({ s, p: e.p, t, j: e.j, l: e.l, y: e.y, d: JSON.parse(e.d), o }))
      }
      lines.push(\"SELECT step_journal_append('\" + ('[' + rows.join(',') + ']').replaceAll(\"'\", \"''\") + \"'::jsonb, false);\")
    }
    fs.writeFileSync('$DIR/w$n.sql', lines.join('\n') + '\n')"
done
chmod a+r "$DIR"/*.sql
for v in "${@:-current}"; do
  for n in 20 120; do
    $P -c "CREATE DATABASE ${v//-/_}_$n TEMPLATE base"
    case "$v" in
      current) ;;
      no-trace-idx) $P -d "${v//-/_}_$n" -c "DROP INDEX IF EXISTS step_journal_trace_idx; DROP INDEX IF EXISTS step_journal_trace_start_idx" ;;
      trace-start) $P -d "${v//-/_}_$n" -c "DROP INDEX IF EXISTS step_journal_trace_idx; CREATE INDEX IF NOT EXISTS step_journal_trace_start_idx ON step_journal (trace_id) WHERE stream_position = 0 AND trace_id IS NOT NULL" ;;
      no-tx-idx) $P -d "${v//-/_}_$n" -c "DROP INDEX step_journal_tx_idx" ;;
      *) echo "unknown variant $v" >&2; exit 2 ;;
    esac
  done
done
run_pg "$BIN/pg_ctl -D $DIR/data stop" >/dev/null
count() { run_pg "valgrind --tool=callgrind --callgrind-out-file=/dev/null $BIN/postgres --single -D $DIR/data $1 < $2" 2>&1 >/dev/null | sed -n 's/.*Collected : //p'; }
for v in "${@:-current}"; do
  a=$(count "${v//-/_}_20" "$DIR/w20.sql"); b=$(count "${v//-/_}_120" "$DIR/w120.sql")
  echo "$v: $(( (b - a) / 2500 )) instructions per request (5 events), $b for 120 batches"
done
rm -rf "$DIR"
