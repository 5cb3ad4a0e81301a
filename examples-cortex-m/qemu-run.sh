#!/usr/bin/env bash
# QEMU runner for the firmware: qemu-run.sh MACHINE CPU ELF (cargo appends the ELF path).
# Output comes over semihosting; bins with a .defmt section are decoded by defmt-print.
# With QEMU_SERIAL_INPUT=FILE, the board's first UART reads FILE (QEMU's stdin).
# `timeout` caps every run (QEMU_TIMEOUT seconds, default 300): a firmware whose stdout is
# closed early would loop forever. The soft-float Cortex-M0 `tune_logreg` ran past 120 s on
# a machine shared with other builds.
set -euo pipefail
machine="$1" cpu="$2" elf="$3"
serial=(-serial none)
if [ -n "${QEMU_SERIAL_INPUT:-}" ]; then
  serial=(-serial stdio)
fi
qemu=(timeout "${QEMU_TIMEOUT:-300}" qemu-system-arm -machine "$machine" -cpu "$cpu"
      -nographic -monitor none "${serial[@]}"
      -semihosting-config enable=on,target=native -kernel "$elf")
if readelf -S "$elf" | grep -q '\.defmt'; then
  "${qemu[@]}" < /dev/null | defmt-print -e "$elf"     # pipefail keeps QEMU's exit status
elif [ -n "${QEMU_SERIAL_INPUT:-}" ]; then
  exec "${qemu[@]}" < "$QEMU_SERIAL_INPUT"
else
  exec "${qemu[@]}" < /dev/null
fi
