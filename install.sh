#!/bin/sh
# Install or uninstall passthrough-hook as libvirt's qemu hook.
#
#   sudo ./install.sh              install (distro packages, program, hook, config dir, logrotate)
#   sudo ./install.sh --uninstall  remove exactly what the install put there
#   ./install.sh --destdir DIR     stage into DIR (no packages, no daemon reload); for tests
#
# An existing /etc/libvirt/hooks/qemu that is not ours is never replaced: the hook goes to
# /etc/libvirt/hooks/qemu.d/ instead, which libvirt >= 6.5 runs after the main hook.
set -eu

PREFIX=/usr/local
DESTDIR=
PYTHON=/usr/bin/python3
ACTION=install
DEPS=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --destdir) DESTDIR=$(cd "$2" && pwd); DEPS=no; shift 2 ;;
        --prefix) PREFIX=$2; shift 2 ;;
        --python) PYTHON=$2; shift 2 ;;
        --no-deps) DEPS=no; shift ;;
        --uninstall) ACTION=uninstall; shift ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

SRC=$(cd "$(dirname "$0")" && pwd)
HOOKS=/etc/libvirt/hooks
LIBDIR=$PREFIX/lib/passthrough-hook
CONFDIR=$HOOKS/passthrough
MANIFEST=/var/lib/passthrough-hook/installed-files
MARKER="installed by passthrough-hook install.sh"

say() { echo "install.sh: $*"; }
die() { echo "install.sh: $*" >&2; exit 1; }

record() { echo "$1" >> "$DESTDIR$MANIFEST.new"; }

put_dir() {  # put_dir DIR MODE: create DIR and its missing parents, recording each one
    parent=$(dirname "$1")
    [ "$parent" = / ] || [ -d "$DESTDIR$parent" ] || put_dir "$parent" 0755
    if [ ! -d "$DESTDIR$1" ]; then
        mkdir "$DESTDIR$1"; chmod "$2" "$DESTDIR$1"; record "dir $1"
    fi
}

put_file() {  # put_file SRC DEST MODE
    install -m "$3" "$1" "$DESTDIR$2"; record "file $2"
}

reload_libvirt() {
    [ -z "$DESTDIR" ] || return 0
    done_any=no
    for unit in libvirtd virtqemud; do
        if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$unit" 2>/dev/null; then
            systemctl reload "$unit" && say "reloaded $unit so it notices the hook" && done_any=yes
        elif [ -f "/run/$unit.pid" ] && kill -0 "$(cat "/run/$unit.pid")" 2>/dev/null; then
            kill -HUP "$(cat "/run/$unit.pid")" && say "sent SIGHUP to $unit so it notices the hook" && done_any=yes
        fi
    done
    [ "$done_any" = yes ] || say "libvirt is not running; it will find the hook when it starts"
}

# --- security policies -------------------------------------------------------------------
# SELinux (Fedora/RHEL): files copied into place keep the label of where they were made, so
# label them as the policy says (/etc/libvirt/hooks is virt_hook_t since the 2024 policy).
# Hooks run unconfined only with the virt_hooks_unconfined boolean on; turning it on is the
# administrator's call, so it is printed, not done.
selinux_enabled() {
    [ -e "$DESTDIR/sys/fs/selinux/enforce" ] && return 0
    [ -z "$DESTDIR" ] && command -v selinuxenabled >/dev/null 2>&1 && selinuxenabled
}

hook_boolean() {  # prints on, off, or nothing when the policy has no such boolean
    if command -v getsebool >/dev/null 2>&1; then
        getsebool virt_hooks_unconfined 2>/dev/null | sed -n 's/^virt_hooks_unconfined --> //p'
    elif [ -r "$DESTDIR/sys/fs/selinux/booleans/virt_hooks_unconfined" ]; then
        case $(cut -d' ' -f1 "$DESTDIR/sys/fs/selinux/booleans/virt_hooks_unconfined") in
            1) echo on ;; *) echo off ;;
        esac
    fi
}

apply_selinux() {
    selinux_enabled || return 0
    if command -v restorecon >/dev/null 2>&1; then
        if restorecon -R "$DESTDIR$HOOKS" "$DESTDIR$PREFIX/bin/passthrough-hook" "$DESTDIR$LIBDIR"; then
            say "SELinux: labelled $HOOKS, $PREFIX/bin/passthrough-hook and $LIBDIR (restorecon -R)"
        else
            say "SELinux: restorecon -R $HOOKS $PREFIX/bin/passthrough-hook $LIBDIR failed; run it again as root"
        fi
    else
        say "SELinux is enabled but restorecon is missing (policycoreutils): run restorecon -R $HOOKS $PREFIX/bin/passthrough-hook $LIBDIR"
    fi
    case $(hook_boolean) in
        on) say "SELinux: virt_hooks_unconfined is on: libvirt runs the hook unconfined" ;;
        off)
            say "SELinux: virt_hooks_unconfined is off, so libvirt runs hooks confined and the hook's"
            say "  sysfs writes and modprobe are denied. To let it work, run:"
            say "  setsebool -P virt_hooks_unconfined on" ;;
        *) say "SELinux: the policy has no virt_hooks_unconfined boolean (older than the 2024 policy); \`passthrough-hook check <domain>\` reports denials" ;;
    esac
}

# AppArmor (Debian/Ubuntu): libvirtd's and virtqemud's profiles run hooks inside themselves
# (`/etc/libvirt/hooks/** rmix`) and allow them any file (`/** rwmkl`) and /usr/sbin/* PUx,
# so the hook needs no override. Say so, or say what is missing on a profile without it.
apply_apparmor() {
    [ "$(cat "$DESTDIR/sys/module/apparmor/parameters/enabled" 2>/dev/null)" = Y ] || return 0
    for profile in usr.sbin.virtqemud usr.sbin.libvirtd; do
        file=$DESTDIR/etc/apparmor.d/$profile
        [ -f "$file" ] || continue
        if grep -Eq '^[[:space:]]*/etc/libvirt/hooks/\*\*[[:space:]]+[a-z]*ix' "$file"; then
            say "AppArmor: /etc/apparmor.d/$profile runs hooks inside its profile (/etc/libvirt/hooks/** rmix); no local override is needed"
        else
            say "AppArmor: /etc/apparmor.d/$profile has no rule for /etc/libvirt/hooks/**: add"
            say "  /etc/libvirt/hooks/** rmix,"
            say "  to /etc/apparmor.d/local/$profile, then: apparmor_parser -r /etc/apparmor.d/$profile"
        fi
        return 0
    done
}

install_deps() {
    [ "$DEPS" = yes ] || return 0
    if "$PYTHON" -c 'import yaml, libvirt' 2>/dev/null; then return 0; fi
    if command -v apt-get >/dev/null; then
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-yaml python3-libvirt
    elif command -v dnf >/dev/null; then dnf install -y python3-pyyaml python3-libvirt
    elif command -v pacman >/dev/null; then pacman -S --needed --noconfirm python-yaml libvirt-python
    elif command -v zypper >/dev/null; then zypper --non-interactive install python3-PyYAML python3-libvirt-python
    else die "no known package manager: install PyYAML and the libvirt Python bindings for $PYTHON"
    fi
    "$PYTHON" -c 'import yaml' || die "$PYTHON still cannot import yaml"
}

do_install() {
    [ -x "$PYTHON" ] || die "$PYTHON not found; give the interpreter with --python /path/to/python3"
    # Both installs would run every profile twice.
    [ ! -e "$DESTDIR/usr/lib/passthrough-hook/hook-setup" ] || die "passthrough-hook is installed \
from a distribution package (/usr/lib/passthrough-hook); remove that package first, or keep using it"
    install_deps
    [ ! -f "$DESTDIR$MANIFEST" ] || { say "already installed; reinstalling"; do_uninstall quiet; }
    state=$(dirname "$MANIFEST")
    mkdir -p "$DESTDIR$state"
    : > "$DESTDIR$MANIFEST.new"

    put_dir "$PREFIX/lib" 0755
    put_dir "$LIBDIR" 0755
    for dir in passthrough passthrough/actions passthrough/host passthrough/tools; do
        put_dir "$LIBDIR/$dir" 0755
        for file in "$SRC/$dir"/*.py "$SRC/$dir"/*.json; do
            [ -f "$file" ] && put_file "$file" "$LIBDIR/$dir/$(basename "$file")" 0644
        done
    done

    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    printf '#!%s -I\n# %s\nimport sys\nsys.path.insert(0, "%s")\nfrom passthrough.cli import console_main\nconsole_main()\n' \
        "$PYTHON" "$MARKER" "$LIBDIR" > "$tmp"
    put_dir "$PREFIX/bin" 0755
    put_file "$tmp" "$PREFIX/bin/passthrough-hook" 0755

    sed -e "1s|.*|#!$PYTHON -IS|" -e "s|^LIBDIR = \"@LIBDIR@\".*|LIBDIR = \"$LIBDIR\"  # $MARKER|" \
        "$SRC/hooks/qemu" > "$tmp"
    put_dir /etc/libvirt 0755
    put_dir "$HOOKS" 0755
    if [ ! -e "$DESTDIR$HOOKS/qemu" ]; then
        put_file "$tmp" "$HOOKS/qemu" 0755
        hook=$HOOKS/qemu
    else
        put_dir "$HOOKS/qemu.d" 0755
        put_file "$tmp" "$HOOKS/qemu.d/passthrough-hook" 0755
        hook=$HOOKS/qemu.d/passthrough-hook
        say "kept your existing $HOOKS/qemu; installed the hook as $hook (libvirt >= 6.5 runs both)"
    fi

    put_dir "$CONFDIR" 0755
    put_file "$SRC/config/win10.yaml" "$CONFDIR/win10.yaml.example" 0644
    # Profiles name it as $schema=profile.schema.json (editors with the YAML language server).
    put_file "$SRC/passthrough/profile.schema.json" "$CONFDIR/profile.schema.json" 0644
    put_dir /etc/logrotate.d 0755
    put_file "$SRC/packaging/passthrough-hook.logrotate" /etc/logrotate.d/passthrough-hook 0644
    mv "$DESTDIR$MANIFEST.new" "$DESTDIR$MANIFEST"
    say "installed $PREFIX/bin/passthrough-hook and the hook $hook"
    say "write a profile as $CONFDIR/<domain>.yaml (see $CONFDIR/win10.yaml.example), then:"
    say "  passthrough-hook --dry-run <domain> prepare begin"
    apply_selinux
    apply_apparmor
    reload_libvirt
}

refuse_while_in_use() {
    # A journal means a domain runs with devices the hook changed; without the hook its
    # release/end would never give them back.
    for journal in "$DESTDIR"/run/passthrough-hook/*.json; do
        [ -f "$journal" ] || continue
        domain=$(basename "$journal" .json)
        die "$domain still has devices set up by its profile (journal /run/passthrough-hook/$domain.json):
stop it first (virsh shutdown $domain), or give them back with \`passthrough-hook recover $domain\`"
    done
}

do_uninstall() {
    [ -f "$DESTDIR$MANIFEST" ] || { [ "${1:-}" = quiet ] || say "not installed (no $MANIFEST)"; return 0; }
    [ "${1:-}" = quiet ] || refuse_while_in_use
    # Files first, then directories deepest first, and a directory only if it is empty
    # (profiles you wrote stay).
    grep '^file ' "$DESTDIR$MANIFEST" | cut -c6- | while read -r path; do rm -f "$DESTDIR$path"; done
    # Bytecode Python wrote next to the installed modules when the hook first ran.
    [ ! -d "$DESTDIR$LIBDIR" ] || find "$DESTDIR$LIBDIR" -type d -name __pycache__ -prune -exec rm -rf {} +
    grep '^dir ' "$DESTDIR$MANIFEST" | cut -c5- | sort -r | while read -r path; do
        rmdir "$DESTDIR$path" 2>/dev/null || { [ "${1:-}" = quiet ] || say "kept $path (not empty)"; }
    done
    rm -f "$DESTDIR$MANIFEST"
    rmdir "$DESTDIR$(dirname "$MANIFEST")" 2>/dev/null || true  # created before the manifest existed
    [ "${1:-}" = quiet ] || { say "uninstalled"; reload_libvirt; }
}

[ "$(id -u)" = 0 ] || [ -n "$DESTDIR" ] || die "run as root (or stage with --destdir DIR)"
if [ "$ACTION" = install ]; then do_install; else do_uninstall; fi
