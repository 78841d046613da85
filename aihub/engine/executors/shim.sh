# AIHub local executor supervisor: runs ONE attempt of a node and records how it ended.
#
# This file is fixed: it never contains user values. Paths arrive as arguments, the node's argv after `--`,
# and the node's environment is this script's own environment, so values are never parsed as shell code.
# Every variable of the script starts with `_aihub_` (the executor refuses such names in a node's env) and
# every expansion is quoted, so nothing a node's env holds (even IFS) changes what it does.
#
# usage: sh shim.sh SCRATCH LOG WORKDIR MOUNT BINDS -- ARGV...
#   SCRATCH  the attempt's scratch dir, where `exit` is written (and, in the command line, how the
#            executor finds this process again after a restart)
#   LOG      file the node's stdout+stderr are appended to (opened before any mount can hide its path; the
#            report pipe is then stdin, moved to fd 4), or
#            "-": the launcher already made SCRATCH the working directory and the log stdout and stderr
#            (before its mounts: the data dir they are in may be hidden from here on), and made the binds;
#            it says on fd 3 when the namespace is ready ("ok"; "proc": ready, but this script mounts the PID
#            namespace's /proc itself, the kernel being older than 6.15), and watches fd 4, the report pipe
#            (see launcher.py)
#   WORKDIR  the node's working directory
#   MOUNT    absolute path of mount(8), or "-" when there are no binds (and, with LOG "-", no mount(8) here)
#   BINDS    "fstab": the binds are the lines of SCRATCH/fstab (written by the executor: its own paths, escaped
#            as fstab(5) says), made in order by one mount(8) inside the private mount namespace the executor
#            started this script in (one process, not one per bind); "0": none
#
# The environment is the node's, except LC_ALL=C (the node's own LC_ALL, if any, is in _aihub_lc_all).
#
# The executor starts this script as the leader of a new session and process group, which the node shares:
# stop() signals the whole group. The script survives SIGTERM (and the other catchable signals a node may
# send to its group) through handlers, which exec resets, so the node sees default dispositions. The node
# runs in the foreground, so it also does not inherit the SIGINT/SIGQUIT that `sh` ignores in background jobs.
#
# `exit` gets the node's status (128+N when killed by signal N), or "error: ..." when the attempt could not
# be set up. It is written with one small write(2): readers treat an empty file as not written yet. Then the
# script kills its whole group, itself included: like a container whose main process ended, whatever the
# node left running goes too. As PID 1 of a PID namespace (the kill spares it) it then says so on the
# report pipe (fd 4: the launcher's, or the executor's), so that the server need not wait for the namespace to
# be taken down; a reader that is gone (the server was killed) gets no word, and the write's error is ignored.

_aihub_term=
_aihub_report=
trap '_aihub_term=1' TERM
trap : HUP INT QUIT USR1 USR2 ALRM

_aihub_scratch=$1
_aihub_log=$2
_aihub_workdir=$3
_aihub_mount=$4
_aihub_binds=$5
shift 5

_aihub_finish() {
	printf '%s\n' "$1" >exit
	kill -KILL "-$$" 2>/dev/null # in a PID namespace $$ is 1: every other process in it
	if [ -n "$_aihub_report" ] && [ "$$" = 1 ]; then
		trap '' PIPE
		printf 'ended\n' 2>/dev/null >&4
	fi
	exit 0
}

if [ "$_aihub_log" != - ]; then
	cd "$_aihub_scratch" || exit 121
	# stdin is the report pipe (the executor's; /dev/null for others): fd 4 from here on, the node gets /dev/null
	exec 4>&0 </dev/null >>"$_aihub_log" 2>&1 || exit 122
	_aihub_report=1
else
	# The launcher is still setting up the namespace (the node's /proc): it writes "ok" on fd 3 once done,
	# or the status to record instead. Its end without a word (killed) is a failed set-up too.
	if ! read -r _aihub_gate <&3; then
		[ -z "$_aihub_term" ] || _aihub_finish 143
		_aihub_gate="error: the launcher ended before the node's namespace was set up"
	fi
	exec 3<&-
	_aihub_report=1
	if [ "$_aihub_gate" = proc ]; then
		# (as PID 1 of the namespace, in its private mount namespace: the launcher could not mount it from outside)
		"$_aihub_mount" -t proc -o nosuid,noexec,nodev proc /proc || {
			[ -z "$_aihub_term" ] || _aihub_finish 143
			_aihub_finish "error: could not mount /proc for the node's PID namespace (see the log)"
		}
	elif [ "$_aihub_gate" != ok ]; then
		_aihub_finish "$_aihub_gate"
	fi
fi

if [ "$_aihub_binds" = fstab ]; then
	# read-only binds carry nosuid,nodev too: in a user namespace (a server that is not root, e.g. in a
	# container) the outer mount's nosuid/nodev are locked and a remount that drops them is refused
	"$_aihub_mount" --all --fstab "$_aihub_scratch/fstab" || {
		# A stop that arrives while mount(8) runs kills it too (it shares the group): that is a stop,
		# not a set-up error.
		[ -z "$_aihub_term" ] || _aihub_finish 143
		_aihub_finish "error: could not mount the node's storages and private /tmp (see the log)"
	}
fi
shift # the "--"

# A stop touches `stop` before it signals: as PID 1 of a PID namespace this script does not get a SIGTERM
# sent before its trap was set, so the file tells.
[ -z "$_aihub_term" ] && [ ! -e stop ] || _aihub_finish 143
(
	# (still in the scratch dir) a stop that came while the subshell started: its SIGTERM went to the
	# supervisor's trap, not here
	[ ! -e stop ] || exit 143
	exec 4>&- # the report pipe is the supervisor's alone
	cd -- "$_aihub_workdir" || exit 126
	unset OLDPWD
	# The tools above ran with LC_ALL=C (no locale files to load); the node gets its own value back.
	if [ -n "${_aihub_lc_all+set}" ]; then LC_ALL=$_aihub_lc_all; else unset LC_ALL; fi
	unset _aihub_lc_all
	exec "$@"
)
_aihub_finish "$?"
