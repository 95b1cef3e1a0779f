#!/usr/bin/env bash
# A 512 MiB object written and read back while the process runs under
# `ulimit -f` of 64 MiB: no bucket file reaches the limit, where writing the
# same bytes to one file fails. Data flows through FIFOs (a file of 512 MiB
# could not be made under the limit). Under ASan (AERIALS_SANITIZED=1) the
# object is 160 MiB, still well past the limit.
source "$(dirname "$0")/lib.sh"

MIB=$((1024 * 1024))
size_mib=512
[ "${AERIALS_SANITIZED:-}" == "1" ] && size_mib=160
limit_kib=$((64 * 1024))   # ulimit -f counts 1024-byte blocks

# Deterministic, incompressible bytes, made twice (once to hash, once to store).
gen() { openssl enc -aes-128-ctr -pass pass:aerials -nosalt -pbkdf2 </dev/zero 2>/dev/null | head -c $((size_mib * MIB)); }
expected="$(gen | sha256sum | cut -d' ' -f1)"

sql "CREATE VIRTUAL TABLE files USING aerials_files(root='data');" >/dev/null

mkfifo in.fifo out.fifo
(ulimit -f "$limit_kib"; head -c $((size_mib * MIB)) /dev/zero > one_file) 2>/dev/null
rc=$?
expect_eq "one file of ${size_mib} MiB fails under ulimit -f 64 MiB" "yes" "$([ $rc -ne 0 ] && echo yes || echo "no (rc $rc)")"
rm -f one_file

gen > in.fifo &
put_out="$(ulimit -f "$limit_kib"; sql "SELECT json_extract(aerials_put('data', 'assets', 'big.bin', 'in.fifo'), '\$.sha256');")"
expect_eq "put of ${size_mib} MiB under ulimit -f 64 MiB" "$expected" "$put_out"
wait

sha256sum < out.fifo | cut -d' ' -f1 > got.sha &
reader=$!
get_out="$(ulimit -f "$limit_kib"; sql "SELECT aerials_get('data', 'assets', 'big.bin', 'out.fifo');")"
wait "$reader"
expect_eq "get of ${size_mib} MiB under ulimit -f 64 MiB" "$((size_mib * MIB))" "$get_out"
expect_eq "bytes read back hash as written" "$expected" "$(cat got.sha)"

largest="$(find data -type f -printf '%s\n' | sort -n | tail -1)"
expect_eq "largest file in the store is under 64 MiB" "yes" "$([ "$largest" -lt $((64 * MIB)) ] && echo yes || echo "no ($largest)")"
expect_eq "object listed with its size" "$((size_mib * MIB))" "$(sql "CREATE VIRTUAL TABLE temp.f USING aerials_files(root='data'); SELECT size FROM f WHERE bucket='assets' AND key='big.bin';")"
finish
