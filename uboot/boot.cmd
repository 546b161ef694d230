# Outpost A/B boot script (U-Boot hush; Debian bookworm's U-Boot 2023.01).
# `outpost image build` compiles it into BOOT/boot.scr and puts a prelude in
# front: devtype/devnum defaults (distro boot already sets both to the disk this
# script came from), the board's load addresses, outpost_fdt_addr and
# outpost_attempts. Partitions: 1 BOOT (this script, state.env), 2 SLOT_A,
# 3 SLOT_B.
#
# The rule (RAUC's bootchooser): take the first slot in BOOT_ORDER with
# attempts left, spend one attempt and save that BEFORE booting it;
# outpost-init gives the attempts back once the slot is healthy. When no slot
# has attempts left, re-arm them all rather than strand the board here.

setenv outpost_state_addr ${kernel_addr_r}
setenv outpost_slot
setenv BOOT_ORDER
setenv BOOT_A_LEFT
setenv BOOT_B_LEFT

# Only the chooser variables are taken from the file: it cannot set anything else.
if load ${devtype} ${devnum}:1 ${outpost_state_addr} state.env && env import -c ${outpost_state_addr} 0x4000 BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT; then
  echo "outpost: state order=${BOOT_ORDER} A=${BOOT_A_LEFT} B=${BOOT_B_LEFT}"
else
  echo "outpost: state.env missing or corrupt, starting over from slot A"
  setenv BOOT_ORDER "A B"
  setenv BOOT_A_LEFT ${outpost_attempts}
  setenv BOOT_B_LEFT 0
fi
# A missing or garbled counter reads as 0 below (test -gt fails on it).
env exists BOOT_ORDER || setenv BOOT_ORDER "A B"

for s in ${BOOT_ORDER}; do
  if test -z "${outpost_slot}"; then
    if test "${s}" = "A" && test ${BOOT_A_LEFT} -gt 0; then
      setenv outpost_slot A
      setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
    fi
    if test "${s}" = "B" && test ${BOOT_B_LEFT} -gt 0; then
      setenv outpost_slot B
      setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
    fi
  fi
done

if test -z "${outpost_slot}"; then
  echo "outpost: no slot has attempts left; re-arming both slots"
  setenv BOOT_A_LEFT ${outpost_attempts}
  setenv BOOT_B_LEFT ${outpost_attempts}
  if test "${BOOT_ORDER}" = "B A" || test "${BOOT_ORDER}" = "B"; then
    setenv outpost_slot B
    setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
  else
    if test "${BOOT_ORDER}" != "A"; then
      setenv BOOT_ORDER "A B"
    fi
    setenv outpost_slot A
    setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
  fi
fi

# Persist the spent attempt first: a hang or panic from here on still counts.
env export -c -s 0x4000 ${outpost_state_addr} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
if fatwrite ${devtype} ${devnum}:1 ${outpost_state_addr} state.env 0x4000; then
  echo "outpost: slot ${outpost_slot} chosen, left A=${BOOT_A_LEFT} B=${BOOT_B_LEFT}"
else
  echo "outpost: WARNING: could not write state.env; booting slot ${outpost_slot} anyway"
fi

if test "${outpost_slot}" = "B"; then
  setenv outpost_part 3
else
  setenv outpost_part 2
fi

# boot.env (OS_ARGS, OS_VERSION) is loaded into the ramdisk area, which
# initrd.img then overwrites. booti inflates Image.gz through
# kernel_comp_addr_r; kernel_comp_size is the compressed size.
setenv OS_ARGS
setenv OS_VERSION
if load ${devtype} ${devnum}:${outpost_part} ${ramdisk_addr_r} boot.env && env import -t ${ramdisk_addr_r} ${filesize} OS_ARGS OS_VERSION && load ${devtype} ${devnum}:${outpost_part} ${kernel_addr_r} Image.gz && setenv kernel_comp_size ${filesize} && load ${devtype} ${devnum}:${outpost_part} ${ramdisk_addr_r} initrd.img && setenv ramdisk_size ${filesize}; then
  setenv bootargs "${OS_ARGS} outpost.slot=${outpost_slot}"
  echo "outpost: booting slot ${outpost_slot}, version ${OS_VERSION}"
  booti ${kernel_addr_r} ${ramdisk_addr_r}:${ramdisk_size} ${outpost_fdt_addr}
fi

# Still here: the slot is broken. Its attempt is spent, so a reset moves on.
echo "outpost: slot ${outpost_slot} did not boot; resetting"
sleep 1
reset
