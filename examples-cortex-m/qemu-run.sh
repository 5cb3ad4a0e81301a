#!/usr/bin/env bash
# QEMU runner for the firmware: qemu-run.sh MACHINE CPU ELF (cargo appends the ELF path).
# Output comes over semihosting; bins with a .defmt section are decoded by defmt-print.
# `timeout` caps every run: a firmware whose stdout is closed early would loop forever.
set -euo pipefail
machine="$1" cpu="$2" elf="$3"
qemu=(timeout "${QEMU_TIMEOUT:-120}" qemu-system-arm -machine "$machine" -cpu "$cpu"
      -nographic -monitor none -serial none
      -semihosting-config enable=on,target=native -kernel "$elf")
if readelf -S "$elf" | grep -q '\.defmt'; then
  "${qemu[@]}" | defmt-print -e "$elf"     # pipefail keeps QEMU's exit status
else
  exec "${qemu[@]}"
fi
