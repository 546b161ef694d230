# Outpost A/B boot script (U-Boot hush; Debian bookworm's U-Boot 2023.01).
# `outpost image build` compiles it into BOOT/boot.scr and puts a prelude in
# front: devtype/devnum defaults (distro boot already sets both to the disk this
# script came from), the board's load addresses, outpost_fdt_addr,
# outpost_attempts and outpost_max_attempts (bare hex), outpost_slot_dtb (set
# when slots carry DTBs) and then fdt_addr_r. Partitions: 1 BOOT
# (this script, state.env, state2.env), 2 SLOT_A, 3 SLOT_B.
#
# The rule (RAUC's bootchooser; the same as outpost::bootstate, which tests
# it): take the first slot in BOOT_ORDER with attempts left, spend one attempt
# and save that BEFORE booting it; outpost-init gives the attempts back once
# the slot is healthy. When no slot has attempts left, re-arm them all rather
# than strand the board here.
#
# The state is kept twice, state.env and state2.env, each a complete
# `env export -c` blob with a sequence number BOOT_SEQ. The valid copy with
# the newer number (modulo 256) wins; the write goes to the OTHER copy with
# the next number, so a power cut during it leaves the newer copy intact.
#
# Numbers: setexpr reads its operands as hex and prints bare hex ("a" for 10);
# test -gt reads "a" as 0 and "010" as octal, but "0xa" as 10. So every number
# here is bare hex from setexpr, compared as 0x${N}, and saved as 0x${N}.

setexpr outpost_addr2 ${kernel_addr_r} + 0x10000
setenv outpost_addr1 ${kernel_addr_r}

# outpost_v := a sane bare-hex number from any text (a value sorting before
# "0", such as "*addr" that setexpr would dereference, or "", is 0).
setenv outpost_num 'if test "${outpost_v}" "<" "0"; then setenv outpost_v 0; fi; setexpr outpost_v "${outpost_v}" + 0'
# ... and as an attempt counter: 0 to outpost_max_attempts.
setenv outpost_counter 'run outpost_num; if test 0x${outpost_v} -gt 0x${outpost_max_attempts}; then setenv outpost_v ${outpost_max_attempts}; fi; if test 0x${outpost_v} -lt 0; then setenv outpost_v 0; fi'

# 1. Which copies are valid, and their sequence numbers.
setenv outpost_ok1 0
setenv outpost_ok2 0
setenv BOOT_SEQ
if load ${devtype} ${devnum}:1 ${outpost_addr1} state.env && env import -c ${outpost_addr1} 0x4000 BOOT_SEQ; then
  setenv outpost_ok1 1
  setenv outpost_v "${BOOT_SEQ}"
  run outpost_num
  setexpr outpost_seq1 ${outpost_v} % 0x100
fi
setenv BOOT_SEQ
if load ${devtype} ${devnum}:1 ${outpost_addr2} state2.env && env import -c ${outpost_addr2} 0x4000 BOOT_SEQ; then
  setenv outpost_ok2 1
  setenv outpost_v "${BOOT_SEQ}"
  run outpost_num
  setexpr outpost_seq2 ${outpost_v} % 0x100
fi

# 2. The newer valid copy: second wins when (seq2 - seq1) mod 256 is 1..0x7f.
setenv outpost_from 0
if test ${outpost_ok1} = 1 && test ${outpost_ok2} = 1; then
  setexpr outpost_d ${outpost_seq2} - ${outpost_seq1}
  setexpr outpost_d ${outpost_d} % 0x100
  if test 0x${outpost_d} -ge 1 && test 0x${outpost_d} -lt 0x80; then
    setenv outpost_from 2
  else
    setenv outpost_from 1
  fi
elif test ${outpost_ok1} = 1; then
  setenv outpost_from 1
elif test ${outpost_ok2} = 1; then
  setenv outpost_from 2
fi

# Only the chooser variables are taken from the file: it cannot set anything else.
setenv BOOT_ORDER
setenv BOOT_A_LEFT
setenv BOOT_B_LEFT
setenv BOOT_GOOD
if test ${outpost_from} = 1; then
  env import -c ${outpost_addr1} 0x4000 BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT BOOT_GOOD
  setenv outpost_seq ${outpost_seq1}
  setenv outpost_file state2.env
elif test ${outpost_from} = 2; then
  env import -c ${outpost_addr2} 0x4000 BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT BOOT_GOOD
  setenv outpost_seq ${outpost_seq2}
  setenv outpost_file state.env
else
  echo "outpost: both state copies missing or corrupt, starting over from slot A"
  setenv BOOT_ORDER "A B"
  setenv BOOT_A_LEFT ${outpost_attempts}
  setenv BOOT_B_LEFT 0
  # so that the write below carries sequence number 0
  setenv outpost_seq ff
  setenv outpost_file state.env
fi
echo "outpost: state copy ${outpost_from} (seq 0x${outpost_seq}) order=${BOOT_ORDER} A=${BOOT_A_LEFT} B=${BOOT_B_LEFT} good=${BOOT_GOOD}"

# 3. Normalize: BOOT_ORDER keeps the words A and B (first occurrence), else
#    "A B"; counters become bare hex 0..outpost_max_attempts.
setenv outpost_order
for s in ${BOOT_ORDER}; do
  if test "${s}" = "A" -o "${s}" = "B"; then
    if test -z "${outpost_order}"; then
      setenv outpost_order ${s}
    elif test "${outpost_order}" != "${s}" -a "${outpost_order}" != "A B" -a "${outpost_order}" != "B A"; then
      setenv outpost_order "${outpost_order} ${s}"
    fi
  fi
done
if test -z "${outpost_order}"; then
  setenv outpost_order "A B"
fi
setenv BOOT_ORDER "${outpost_order}"
setenv outpost_v "${BOOT_A_LEFT}"
run outpost_counter
setenv BOOT_A_LEFT ${outpost_v}
setenv outpost_v "${BOOT_B_LEFT}"
run outpost_counter
setenv BOOT_B_LEFT ${outpost_v}

# 4. Choose: the first slot in order with attempts left; spend one.
setenv outpost_slot
for s in ${BOOT_ORDER}; do
  if test -z "${outpost_slot}"; then
    if test "${s}" = "A" && test 0x${BOOT_A_LEFT} -gt 0; then
      setenv outpost_slot A
      setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
    elif test "${s}" = "B" && test 0x${BOOT_B_LEFT} -gt 0; then
      setenv outpost_slot B
      setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
    fi
  fi
done
if test -z "${outpost_slot}"; then
  echo "outpost: no slot has attempts left; re-arming both slots"
  setenv BOOT_A_LEFT ${outpost_attempts}
  setenv BOOT_B_LEFT ${outpost_attempts}
  for s in ${BOOT_ORDER}; do
    if test -z "${outpost_slot}"; then
      setenv outpost_slot ${s}
    fi
  done
  if test "${outpost_slot}" = "B"; then
    setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
  else
    setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
  fi
fi

# 5. Persist the spent attempt to the older copy first: a hang or panic from
#    here on still counts.
setexpr BOOT_SEQ ${outpost_seq} + 1
setexpr BOOT_SEQ ${BOOT_SEQ} % 0x100
setenv BOOT_SEQ 0x${BOOT_SEQ}
setenv BOOT_A_LEFT 0x${BOOT_A_LEFT}
setenv BOOT_B_LEFT 0x${BOOT_B_LEFT}
env export -c -s 0x4000 ${outpost_addr1} BOOT_A_LEFT BOOT_B_LEFT BOOT_GOOD BOOT_ORDER BOOT_SEQ
if fatwrite ${devtype} ${devnum}:1 ${outpost_addr1} ${outpost_file} 0x4000; then
  echo "outpost: slot ${outpost_slot} chosen, left A=${BOOT_A_LEFT} B=${BOOT_B_LEFT}, saved ${outpost_file} seq ${BOOT_SEQ}"
else
  echo "outpost: WARNING: could not write ${outpost_file}; booting slot ${outpost_slot} anyway"
fi

if test "${outpost_slot}" = "B"; then
  setenv outpost_part 3
else
  setenv outpost_part 2
fi

# boot.env (OS_ARGS, OS_VERSION, OS_OVERLAYS) is loaded into the ramdisk
# area, which initrd.img then overwrites. booti inflates Image.gz through
# kernel_comp_addr_r; kernel_comp_size is the compressed size.
# The device tree: the slot's own one for the model U-Boot detected (fdtfile,
# e.g. broadcom/bcm2837-rpi-3-b.dtb) when the board ships them
# (outpost_slot_dtb), loaded last to fdt_addr_r above the ramdisk; else, or
# when the slot lacks that file, the firmware one (outpost_fdt_addr).
# (No quote characters inside the if block: U-Boot hush misparses them.)
setenv OS_ARGS
setenv OS_VERSION
setenv OS_OVERLAYS
if load ${devtype} ${devnum}:${outpost_part} ${ramdisk_addr_r} boot.env && env import -t ${ramdisk_addr_r} ${filesize} OS_ARGS OS_VERSION OS_OVERLAYS && load ${devtype} ${devnum}:${outpost_part} ${kernel_addr_r} Image.gz && setenv kernel_comp_size ${filesize} && load ${devtype} ${devnum}:${outpost_part} ${ramdisk_addr_r} initrd.img && setenv ramdisk_size ${filesize}; then
  setenv bootargs "${OS_ARGS} outpost.slot=${outpost_slot}"
  setenv outpost_fdt ${outpost_fdt_addr}
  if test -n "${outpost_slot_dtb}" && test -n "${fdtfile}"; then
    if load ${devtype} ${devnum}:${outpost_part} ${fdt_addr_r} ${fdtfile}; then
      setenv outpost_fdt ${fdt_addr_r}
    else
      echo "outpost: slot ${outpost_slot} has no ${fdtfile}; using the firmware device tree"
    fi
  fi
  # The slot's device-tree overlays (docs/device-trees.md), applied to a copy
  # of the DT chosen above in the 1 MiB-aligned space after the initrd (1.75 MiB
  # for the DT, then the overlay). They come from the slot, so an upgrade
  # that changes them is A/B like the kernel. Any failure: boot on the
  # untouched DT (a board without its LED still answers; a failed apply can
  # leave the copy damaged, so it is dropped as a whole).
  if test -n "${OS_OVERLAYS}"; then
    setexpr outpost_dt ${ramdisk_addr_r} + ${ramdisk_size}
    setexpr outpost_dt ${outpost_dt} + 0xfffff
    setexpr outpost_dt ${outpost_dt} / 0x100000
    setexpr outpost_dt ${outpost_dt} * 0x100000
    setexpr outpost_dto ${outpost_dt} + 0x1c0000
    setenv outpost_dt_ok 0
    if fdt addr ${outpost_fdt} && fdt move ${outpost_fdt} ${outpost_dt} 0x1c0000; then
      setenv outpost_dt_ok 1
    fi
    for o in ${OS_OVERLAYS}; do
      if test ${outpost_dt_ok} = 1; then
        if load ${devtype} ${devnum}:${outpost_part} ${outpost_dto} overlays/${o}.dtbo && fdt apply ${outpost_dto}; then
          echo "outpost: overlay ${o} applied"
        else
          echo "outpost: overlay ${o} failed; booting on the board DT without overlays"
          setenv outpost_dt_ok 0
        fi
      fi
    done
    if test ${outpost_dt_ok} = 1; then
      setenv outpost_fdt 0x${outpost_dt}
    fi
  fi
  echo "outpost: booting slot ${outpost_slot}, version ${OS_VERSION}, device tree at ${outpost_fdt}"
  booti ${kernel_addr_r} ${ramdisk_addr_r}:${ramdisk_size} ${outpost_fdt}
fi

# Still here: the slot is broken. Its attempt is spent, so a reset moves on.
echo "outpost: slot ${outpost_slot} did not boot; resetting"
sleep 1
reset
