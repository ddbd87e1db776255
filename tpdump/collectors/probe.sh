# tpdump-probe v2
# Prints, in one round trip, the facts tpdump needs from one host, as sections
# headed by a line "--$B <name>". It only reads. Inputs (set before this text):
#   B    random boundary, so no file content can forge a section header
#   R    root prefix ("" on a live host, the mount point with --sysroot)
#   CAP  byte cap of each section
sec() { printf '\n--%s %s\n' "$B" "$1"; }
cap() { head -c "$CAP"; }
command -v renice >/dev/null 2>&1 && renice -n 10 -p $$ >/dev/null 2>&1
command -v ionice >/dev/null 2>&1 && ionice -c 3 -p $$ >/dev/null 2>&1
pids=""
for f in "$R/run/teleport.pid" "$R/var/run/teleport.pid"; do
  if [ -r "$f" ]; then
    p=$(head -c 32 "$f" | tr -cd '0-9')
    [ -n "$p" ] && pids="$pids $p"
  fi
done
for d in "$R"/proc/[0-9]*; do
  [ -r "$d/comm" ] || continue
  c=$(head -c 64 "$d/comm")
  [ "$c" = teleport ] && pids="$pids ${d##*/}"
done
seen=" "
exe=""
for p in $pids; do
  case "$seen" in *" $p "*) continue ;; esac
  [ -r "$R/proc/$p/cmdline" ] || continue
  seen="$seen$p "
  sec "cmdline $p"
  cap < "$R/proc/$p/cmdline"
  if [ -r "$R/proc/$p/environ" ]; then sec "environ $p"; cap < "$R/proc/$p/environ"; fi
  # The teleport binary: the argument named teleport (a wrapper or interpreter may be
  # first), else the first argument.
  [ -n "$exe" ] || exe=$(tr '\000' '\n' < "$R/proc/$p/cmdline" | grep -m 1 '/teleport$')
  [ -n "$exe" ] || exe=$(tr '\000' '\n' < "$R/proc/$p/cmdline" | head -n 1)
done
[ -n "$exe" ] || exe=$(command -v teleport 2>/dev/null)
sec "version"
if [ -n "$exe" ] && [ -x "$R$exe" ]; then
  if command -v timeout >/dev/null 2>&1; then
    timeout 10 "$R$exe" version 2>&1 | cap
  else
    "$R$exe" version 2>&1 | cap
  fi
fi
sec "hostname"
if [ -r "$R/etc/hostname" ]; then cap < "$R/etc/hostname"; else hostname 2>/dev/null; fi
sec "os-release"
if [ -r "$R/etc/os-release" ]; then cap < "$R/etc/os-release"
elif [ -r "$R/usr/lib/os-release" ]; then cap < "$R/usr/lib/os-release"; fi
for p in $pids; do
  case "$seen" in *" $p "*) ;; *) continue ;; esac
  if [ -r "$R/proc/$p/limits" ]; then sec "limits $p"; cap < "$R/proc/$p/limits"; fi
done
sec "init"
head -c 64 "$R/proc/1/comm" 2>/dev/null
sec "tools"
for t in journalctl systemctl ss df nice ionice; do
  command -v "$t" >/dev/null 2>&1 && printf '%s\n' "$t"
done
sec "uptime"
head -c 256 "$R/proc/uptime" 2>/dev/null
sec "meminfo"
head -c 4096 "$R/proc/meminfo" 2>/dev/null
sec "uname"
uname -srvmo 2>/dev/null
sec "date"
date -u +%s.%N
sec "end"
