# Bash helpers for the kernel scenarios (test_kernel_scenarios.py), sourced inside
# the guest.  They run the real hook, record facts and snapshots under $OUT for
# pytest to assert on, and never touch the harness's own devices (HARNESS_DEVICES).
set -uo pipefail

PROFILES=/tmp/hook-profiles  # --config-dir
STATE=/run/passthrough-hook  # --state-dir
HOOK_LOG=/tmp/passthrough-hook.log  # --log-file
DOMAIN=guestvm
dev=/sys/bus/pci/devices
mkdir -p "$OUT/snap"

# fact KEY VALUE...: one "key=value" line in $OUT/facts.
fact() { local key=$1; shift; printf '%s=%s\n' "$key" "$*" >>"$OUT/facts"; }

now() { echo "$EPOCHREALTIME"; }
# elapsed START END: seconds between two $EPOCHREALTIME values (no awk here: /etc is bare).
elapsed() {
    local us=$((10#${2/./} - 10#${1/./}))
    printf '%d.%06d\n' $((us / 1000000)) $((us % 1000000))
}

# profile TEXT: install TEXT as the domain's profile, root-owned and not writable by
# others (the hook refuses profiles anyone else could write).
profile() {
    mkdir -p "$PROFILES" && chmod 755 "$PROFILES"
    printf '%s\n' "$1" >"$PROFILES/$DOMAIN.yaml"
    chmod 644 "$PROFILES/$DOMAIN.yaml"
}

# hook NAME OPERATION SUB_OPERATION [OPTION...]: run passthrough-hook as root with the
# test's directories, the way libvirt runs its hook (domain XML on stdin, a bare
# environment, absolute interpreter).  stdout -> $OUT/NAME.out, stderr -> $OUT/NAME.err,
# exit status -> fact NAME.rc, wall-clock seconds -> fact NAME.seconds.
hook() {
    local name=$1 operation=$2 sub=$3 start rc
    shift 3
    mkdir -p "$(dirname "$OUT/$name")"
    mkdir -p -m 700 "$STATE"  # --state-dir must exist for a dry run (a typo is an error)
    start=$(now)
    echo "<domain type='kvm'><name>$DOMAIN</name></domain>" |
        env -i LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            PYTHONPATH="$PROJECT" /usr/bin/python3 -m passthrough \
            --config-dir "$PROFILES" --state-dir "$STATE" --log-file "$HOOK_LOG" --debug "$@" \
            "$DOMAIN" "$operation" "$sub" - >"$OUT/$name.out" 2>"$OUT/$name.err"
    rc=$?
    fact "$name.seconds" "$(elapsed "$start" "$(now)")"
    fact "$name.rc" "$rc"
    return 0
}

# snapshot NAME: every PCI function's driver and driver_override, the loaded modules
# and the journal, in $OUT/snap/NAME (compared as text by the tests).
snapshot() {
    local file=$OUT/snap/$1 d link address override
    local -A driver=()
    local -a modules
    # One find for all driver links: a process per device is slow under TCG.
    while read -r d link; do driver[${d##*/}]=${link##*/}; done \
        < <(find "$dev"/*/driver -maxdepth 0 -printf '%h %l\n' 2>/dev/null)
    for d in "$dev"/*; do
        address=${d##*/}
        read -r override <"$d/driver_override"
        echo "$address driver=${driver[$address]:-none} override=$override"
    done >"$file"
    mapfile -t modules < <(while read -r module _; do echo "$module"; done </proc/modules | sort)
    echo "modules ${modules[*]}" >>"$file"
    if [ -e "$STATE/$DOMAIN.json" ]; then echo "journal present" >>"$file"
    else echo "journal absent" >>"$file"; fi
}

# bar_mib ADDRESS BAR: the BAR's current size in MiB, from line BAR+1 of `resource`.
bar_mib() {
    local start end flags
    read -r start end flags < <(sed -n "$(($2 + 1))p" "$dev/$1/resource")
    echo $(((end - start + 1) >> 20))
}

iommu_group() { local g; g=$(readlink "$dev/$1/iommu_group") && echo "${g##*/}"; }
