#!/bin/sh
# tests/kernels/guest-init.sh: the init of scripts/vmtest's guests.
#
# scripts/vmtest copies this file to /init of a small busybox initramfs and
# boots one of Debian's kernels with it under QEMU. It runs twice:
#
#   stage 1 (/init, busybox, PID 1 in the initramfs): load the few modules
#     needed to reach the host's root over virtio-9p, put a tmpfs overlay on
#     top of it (the guest may write anywhere; the writes vanish with the VM),
#     mount proc, sys, dev, tracefs, bpffs, cgroup2 ... under it and
#     switch_root into it.
#   stage 2 (/run/vmtest/init stage2, the host's /bin/sh, still PID 1): run
#     the command scripts/vmtest wrote, stdout and stderr on two virtio serial
#     ports that the host prints live, write its exit status to the host's
#     share, power off.
#
# switch_root (rather than chroot) matters: the kernel's module autoload runs
# /sbin/modprobe of the root it sees, which must be the host's kmod with the
# kernel's own modules bound over /lib/modules/<version>; in a chroot it would
# be the initramfs' and iptables would fail ("Failed to initialize nft").
#
# What scripts/vmtest passes, in the writable 9p share "xfer"
# (/run/vmtest/xfer after the switch):
#   config   shell variables: VMTEST_MODDIR (the host path of the kernel's
#            unpacked lib/modules/<version>), VMTEST_KVER, VMTEST_REPO (the
#            repository's host path), VMTEST_CMD_DIR (the command's directory
#            when it is under /tmp or /run, else empty), the host
#            shell's limits VMTEST_MEMLOCK (ulimit -l), VMTEST_NOFILE (-n),
#            and for --net VMTEST_NET_MAC (the NIC's MAC), VMTEST_NET_IP4 and
#            VMTEST_NET_IP6 (address/prefix; IPv6 may be empty); no --net:
#            all three empty
#   command  a sh script: exports, cd to the repo, exec the command
#   status   written here: the command's exit status
#   started  written here when the command is about to start (boot timing)
#
# Anything that goes wrong before the command runs is printed to the console
# (the serial port: scripts/vmtest shows its tail) and the guest powers off
# without a status, which scripts/vmtest reports as a failed boot.

# PID 1 must never exit: the kernel would panic. Every failure powers off.
power_off() {
  sync
  # /bin/busybox is the initramfs' in stage 1 and the host's (busybox-static,
  # installed by scripts/setup) in stage 2; sysrq needs no binary at all.
  /bin/busybox poweroff -f 2>/dev/null
  echo o >/proc/sysrq-trigger 2>/dev/null
  while :; do sleep 60; done
}

# Progress on the console (a file on the host, shown when the boot fails),
# with the uptime: where a slow boot spends its time.
log() {
  read -r up _ 2>/dev/null </proc/uptime || up='?'
  echo "vmtest-init: [$up] $*" >/dev/console 2>/dev/null
}

fail() {
  echo "vmtest-init: error: $*" >/dev/console 2>/dev/null || echo "vmtest-init: error: $*"
  power_off
}

# ---------------------------------------------------------------- stage 1 --

# show_host_dir DIR NAME: a host directory under /tmp or /run (a CI clone, a
# build directory) is hidden by the guest's fresh ones: it gets an overlay of
# its own over the host's copy.
show_host_dir() {
  case "$1" in
    /tmp/* | /run/*) ;;
    *) return 0 ;;
  esac
  mkdir -p "/rw/$2-upper" "/rw/$2-work" "/newroot$1"
  mount -t overlay -o "lowerdir=/lower$1,upperdir=/rw/$2-upper,workdir=/rw/$2-work" \
    overlay "/newroot$1" || fail "mount $1 over the guest's fresh ${1#/}"
}

stage1() {
  /bin/busybox --install -s /bin
  export PATH=/bin

  mount -t proc proc /proc || fail "mount /proc"
  mount -t sysfs sysfs /sys || fail "mount /sys"
  mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
  exec </dev/null >/dev/console 2>&1
  log "stage 1: loading modules"

  # /modules/order lists the modules in dependency order (scripts/vmtest
  # resolved it with modprobe --show-depends and decompressed them: busybox
  # insmod cannot read .ko.xz).
  while read -r ko; do
    insmod "/modules/$ko" || fail "insmod $ko"
  done </modules/order

  # The host's / read-only, and the writable exchange directory. A large
  # msize makes 9p much faster; cache=loose lets the guest keep what it read
  # (the lower layer does not change under a short-lived test VM).
  log "stage 1: mounting the root"
  mkdir -p /lower /xfer /rw /newroot
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro,cache=loose root /lower ||
    fail "mount the host's / over 9p (tag root)"
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 xfer /xfer ||
    fail "mount the exchange directory over 9p (tag xfer)"
  # shellcheck disable=SC1091 # written by scripts/vmtest
  . /xfer/config

  mount -t tmpfs -o mode=0755 rw /rw || fail "mount the overlay's tmpfs"
  mkdir -p /rw/upper /rw/work
  mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
    fail "mount the overlay root"

  # The kernel's own modules where kmod looks for them.
  [ -d "/newroot$VMTEST_MODDIR" ] || fail "no modules at $VMTEST_MODDIR (run scripts/vmtest --fetch)"
  mkdir -p "/newroot/lib/modules/$VMTEST_KVER"
  mount --bind "/newroot$VMTEST_MODDIR" "/newroot/lib/modules/$VMTEST_KVER" ||
    fail "bind $VMTEST_MODDIR"
  # And its /boot (config-<version>, as a Debian system has it: rstwatch
  # reads CONFIG_HZ there).
  mount --bind "/newroot${VMTEST_MODDIR%/lib/modules/*}/boot" /newroot/boot ||
    fail "bind the kernel's /boot"

  mount --move /proc /newroot/proc || fail "move /proc"
  mount --move /sys /newroot/sys || fail "move /sys"
  mount --move /dev /newroot/dev || fail "move /dev"
  # A fresh /run and /tmp: the host's are visible in the lower layer but
  # belong to the host's services.
  mount -t tmpfs -o mode=0755,nosuid,nodev run /newroot/run || fail "mount /run"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmp /newroot/tmp || fail "mount /tmp"
  # The command's directory first: the repository may be inside it.
  [ -z "${VMTEST_CMD_DIR:-}" ] || show_host_dir "$VMTEST_CMD_DIR" cmd
  show_host_dir "$VMTEST_REPO" repo
  mkdir -p /newroot/dev/pts /newroot/dev/shm /newroot/run/vmtest/xfer /newroot/run/lock
  mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /newroot/dev/pts || fail "mount devpts"
  mount -t tmpfs -o mode=1777,nosuid,nodev shm /newroot/dev/shm || fail "mount /dev/shm"
  mount --move /xfer /newroot/run/vmtest/xfer || fail "move the exchange directory"

  # What the agent and the tests need: tracefs (tracepoints), debugfs, bpffs,
  # cgroup v2 with the memory controller for the children (memcg OOM tests).
  mount -t debugfs debugfs /newroot/sys/kernel/debug || fail "mount debugfs"
  mount -t tracefs tracefs /newroot/sys/kernel/tracing || fail "mount tracefs"
  mount -t bpf bpf /newroot/sys/fs/bpf || fail "mount bpffs"
  mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup || fail "mount cgroup2"
  echo +memory >/newroot/sys/fs/cgroup/cgroup.subtree_control ||
    fail "enable the memory controller in cgroup2"

  cp /init /newroot/run/vmtest/init || fail "copy init"
  log "stage 1: switch_root"
  # shellcheck disable=SC2093 # fail only if exec itself fails
  exec switch_root /newroot /bin/sh /run/vmtest/init stage2
  fail "switch_root"
}

# ---------------------------------------------------------------- stage 2 --

# The device node of the virtio serial port named $1 (/dev/vportNpM: N
# depends on the PCI probe order, the name is what the host set).
port() {
  for p in /sys/class/virtio-ports/*; do
    if [ "$(cat "$p/name" 2>/dev/null)" = "$1" ]; then
      echo "/dev/${p##*/}"
      return 0
    fi
  done
  return 1
}

# The NIC with MAC $1 (eth0 in practice: there is only one).
nic_with_mac() {
  for n in /sys/class/net/*; do
    if [ "$(cat "$n/address" 2>/dev/null)" = "$1" ]; then
      echo "${n##*/}"
      return 0
    fi
  done
  return 1
}

# --net: the virtio NIC on the host's tap, with the caller's addresses. IPv6
# without DAD: usable at once, not "tentative" for a second or two.
net_up() {
  modprobe virtio_net || fail "modprobe virtio_net"
  nic=$(nic_with_mac "$VMTEST_NET_MAC") || fail "no network interface with MAC $VMTEST_NET_MAC"
  # shellcheck disable=SC2153 # from the config, like the other VMTEST_*
  ip -4 addr add "$VMTEST_NET_IP4" dev "$nic" || fail "ip addr add $VMTEST_NET_IP4 dev $nic"
  if [ -n "$VMTEST_NET_IP6" ]; then
    ip -6 addr add "$VMTEST_NET_IP6" dev "$nic" nodad || fail "ip addr add $VMTEST_NET_IP6 dev $nic"
  fi
  ip link set "$nic" up || fail "ip link set $nic up"
  log "stage 2: $nic up with $VMTEST_NET_IP4 $VMTEST_NET_IP6"
}

stage2() {
  export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  xfer=/run/vmtest/xfer
  log "stage 2"
  out=$(port vmtest.out) || fail "no virtio port vmtest.out"
  err=$(port vmtest.err) || fail "no virtio port vmtest.err"

  # shellcheck disable=SC1091 # written by scripts/vmtest
  . "$xfer/config"
  # shellcheck disable=SC3045 # dash (the host's /bin/sh) has -l and -n
  ulimit -l "$VMTEST_MEMLOCK" || fail "ulimit -l $VMTEST_MEMLOCK"
  # shellcheck disable=SC3045
  ulimit -n "$VMTEST_NOFILE" || fail "ulimit -n $VMTEST_NOFILE"
  echo vmtest >/proc/sys/kernel/hostname
  ip link set lo up || fail "ip link set lo up"
  [ -z "${VMTEST_NET_MAC:-}" ] || net_up

  log "stage 2: running the command"
  : >"$xfer/started"
  # The command runs as a child of this shell, which (as PID 1) waits for it
  # with waitpid(-1): daemons it leaves behind (nginx) are reaped as they
  # die, so tests that wait for a pid to vanish see it vanish.
  env -i HOME=/root USER=root LOGNAME=root PATH="$PATH" LANG=C.UTF-8 \
    /bin/sh "$xfer/command" <"/dev/null" >"$out" 2>"$err" &
  wait $!
  status=$?
  log "stage 2: the command exited with status $status"
  echo "$status" >"$xfer/status.tmp" && mv "$xfer/status.tmp" "$xfer/status"
  power_off
}

if [ "${1:-}" = stage2 ]; then
  stage2
else
  stage1
fi
fail "init fell through"
