"""The pod of one attempt on Kubernetes, as a plain manifest (no I/O here; the executor sends it).

One pod per attempt, named after its :class:`JobKey` (DNS-safe), ``restartPolicy: Never``::

    initContainers: aihub-init   (helper image: copies a static busybox into the ``aihub-tools`` emptyDir)
    containers:     main         (the node's image; command = busybox sh -c WRAPPER aihub <the node's argv>)
    volumes:        aihub-tools at /.aihub, an emptyDir at /tmp/workflow_space, one volume per data storage

The **wrapper** (:data:`WRAPPER`, a fixed POSIX shell script run by the injected busybox, the pattern of
Argo's emissary and Tekton's entrypoint) is what moves data, so the node's image needs no tool of ours:

1. it downloads every input artifact (``GET {AI_HUB_API_URL}/artifacts/{digest}`` with the run token) and
   unpacks it at the same absolute path it had in the producing node;
2. it runs the node's argv as a child (values reach it only as environment variables and argv items, never
   as shell code), forwarding the SIGTERM of a pod deletion to it;
3. after an exit 0 it reports the declared outputs: a ``text`` output's bytes (base64) on marker lines of
   its own stdout, a ``path`` output packed with tar and uploaded (``POST {AI_HUB_API_URL}/artifacts/
   upload?kind=file|dir&output=NAME``), its digest on a marker line.

Marker lines start with a random per-attempt prefix (``aihub/mark`` annotation); the executor takes them
out of the log it archives. Every value the wrapper needs arrives in ``_AIHUB_*`` environment variables,
which it moves into shell variables and unsets before the node's command starts, so the node sees exactly
the job's environment.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aihub.engine.executors.base import Job, JobKey

__all__ = [
    "INIT_CONTAINER",
    "LABEL_ATTEMPT",
    "LABEL_NODE",
    "LABEL_RUN",
    "MAIN_CONTAINER",
    "TEXT_CAP_BYTES",
    "TOOLS_DIR",
    "WORKFLOW_SPACE",
    "WRAPPER",
    "LaunchError",
    "PodOptions",
    "build_pod",
    "key_selector",
    "label_value",
    "pod_name",
]

MAIN_CONTAINER = "main"
INIT_CONTAINER = "aihub-init"
TOOLS_DIR = "/.aihub"  # the aihub-tools emptyDir: the injected busybox and the wrapper's temp files
BUSYBOX = f"{TOOLS_DIR}/bin/busybox"
WORKFLOW_SPACE = "/tmp/workflow_space"
LABEL_RUN = "aihub/run"
LABEL_NODE = "aihub/node"
LABEL_ATTEMPT = "aihub/attempt"
ANNOTATION_KEY = "aihub/key"
ANNOTATION_OUTPUTS = "aihub/outputs"
ANNOTATION_MAX_TEXT = "aihub/max-text"
ANNOTATION_MARK = "aihub/mark"
GPU_RESOURCE = "nvidia.com/gpu"
RESERVED_ENV_PREFIX = "_AIHUB_"
#: a text output file larger than this is not sent at all (it is certainly too long; only its size is)
TEXT_CAP_BYTES = 1024 * 1024

_DNS_LABEL_MAX = 63
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

INIT_SCRIPT = (
    f"set -e; mkdir -p {TOOLS_DIR}/bin {TOOLS_DIR}/tmp; cp /bin/busybox {BUSYBOX}; chmod 1777 {TOOLS_DIR}/tmp"
)

# The wrapper. Fixed text: inputs, outputs and the marker prefix arrive as _AIHUB_* environment variables
# (indexed names are built from loop counters only, so `eval` never sees a value), the node's argv as "$@".
# Every name it uses starts with _AIHUB_ (refused in a job's env), so no variable of the node is touched;
# the _AIHUB_* variables it received are unset (their values kept in unexported shell variables of the
# same name) before the node's command starts. Tools are busybox applets ("_AIHUB_bb APPLET ..."),
# whatever the image has.
WRAPPER = r"""
for _AIHUB_v in BB MARK TMP TEXT_CAP IN_COUNT OUT_COUNT; do
  eval "_AIHUB_x=\${_AIHUB_$_AIHUB_v-}; unset _AIHUB_$_AIHUB_v; _AIHUB_$_AIHUB_v=\$_AIHUB_x"
done
_AIHUB_i=0
while [ "$_AIHUB_i" -lt "${_AIHUB_IN_COUNT:-0}" ]; do
  for _AIHUB_v in NAME DIGEST KIND PATH URL; do
    eval "_AIHUB_in_${_AIHUB_i}_$_AIHUB_v=\${_AIHUB_IN_${_AIHUB_i}_$_AIHUB_v-}"
    unset "_AIHUB_IN_${_AIHUB_i}_$_AIHUB_v"
  done
  _AIHUB_i=$((_AIHUB_i + 1))
done
_AIHUB_i=0
while [ "$_AIHUB_i" -lt "${_AIHUB_OUT_COUNT:-0}" ]; do
  for _AIHUB_v in NAME TYPE PATH URL; do
    eval "_AIHUB_out_${_AIHUB_i}_$_AIHUB_v=\${_AIHUB_OUT_${_AIHUB_i}_$_AIHUB_v-}"
    unset "_AIHUB_OUT_${_AIHUB_i}_$_AIHUB_v"
  done
  _AIHUB_i=$((_AIHUB_i + 1))
done
_AIHUB_api=${AI_HUB_API_URL%/}
_AIHUB_auth="Authorization: Bearer ${AI_HUB_TOKEN-}"

_AIHUB_emit() { printf '%s %s\n' "$_AIHUB_MARK" "$1"; }
_AIHUB_note() { printf 'aihub: %s\n' "$1"; }
_AIHUB_bb() { "$_AIHUB_BB" "$@"; }

_AIHUB_fetch() {
  _AIHUB_name=$1 _AIHUB_digest=$2 _AIHUB_kind=$3 _AIHUB_path=$4 _AIHUB_url=$5
  _AIHUB_parent=${_AIHUB_path%/*}
  [ -n "$_AIHUB_parent" ] || _AIHUB_parent=/
  _AIHUB_bb mkdir -p "$_AIHUB_parent" || return 1
  _AIHUB_stage=$(_AIHUB_bb mktemp -d "$_AIHUB_parent/.aihub-unpack.XXXXXX") || return 1
  # straight from the object store when the engine handed a presigned URL; else (or when that fails)
  # through the API
  if [ -n "$_AIHUB_url" ] && ! _AIHUB_bb wget -q -O "$_AIHUB_stage.tgz" "$_AIHUB_url"; then
    _AIHUB_note "input '$_AIHUB_name': the direct download failed; fetching it through $_AIHUB_api"
    _AIHUB_url=
  fi
  if [ -z "$_AIHUB_url" ] &&
    ! _AIHUB_bb wget -q -O "$_AIHUB_stage.tgz" --header "$_AIHUB_auth" "$_AIHUB_api/artifacts/$_AIHUB_digest"
  then
    _AIHUB_note "input '$_AIHUB_name': download of artifact $_AIHUB_digest from $_AIHUB_api failed"
    _AIHUB_bb rm -rf "$_AIHUB_stage" "$_AIHUB_stage.tgz"
    return 1
  fi
  _AIHUB_sum=$(_AIHUB_bb sha256sum "$_AIHUB_stage.tgz" 2>/dev/null) || _AIHUB_sum=
  if [ "${_AIHUB_sum%% *}" != "$_AIHUB_digest" ]; then
    _AIHUB_note "input '$_AIHUB_name': artifact $_AIHUB_digest is corrupt (its sha256 does not match); refused"
    _AIHUB_bb rm -rf "$_AIHUB_stage" "$_AIHUB_stage.tgz"
    return 1
  fi
  if ! _AIHUB_bb tar -xzf "$_AIHUB_stage.tgz" -C "$_AIHUB_stage" 2>"$_AIHUB_TMP/tar.err"; then
    _AIHUB_bb cat "$_AIHUB_TMP/tar.err"
    _AIHUB_bb rm -rf "$_AIHUB_stage" "$_AIHUB_stage.tgz"
    return 1
  fi
  _AIHUB_bb rm -f "$_AIHUB_stage.tgz"
  if [ "$_AIHUB_kind" = file ]; then
    _AIHUB_src=$_AIHUB_stage/${_AIHUB_path##*/}
  else
    _AIHUB_src=$_AIHUB_stage
    _AIHUB_bb chmod 755 "$_AIHUB_stage"
  fi
  if [ ! -e "$_AIHUB_src" ]; then
    _AIHUB_note "input '$_AIHUB_name': the archive does not hold ${_AIHUB_path##*/}"
    _AIHUB_bb rm -rf "$_AIHUB_stage"
    return 1
  fi
  if [ -d "$_AIHUB_path" ] && [ ! -L "$_AIHUB_path" ]; then
    if ! _AIHUB_bb rmdir "$_AIHUB_path" 2>/dev/null; then
      _AIHUB_note "input '$_AIHUB_name': $_AIHUB_path already exists and is not empty"
      _AIHUB_bb rm -rf "$_AIHUB_stage"
      return 1
    fi
  elif [ -e "$_AIHUB_path" ] || [ -L "$_AIHUB_path" ]; then
    _AIHUB_bb rm -f "$_AIHUB_path"
  fi
  _AIHUB_bb mv "$_AIHUB_src" "$_AIHUB_path" || return 1
  _AIHUB_bb rm -rf "$_AIHUB_stage"
}

_AIHUB_text() {
  _AIHUB_name=$1 _AIHUB_path=$2
  if [ ! -e "$_AIHUB_path" ]; then _AIHUB_emit "output-error $_AIHUB_name missing"; return 1; fi
  if [ ! -f "$_AIHUB_path" ]; then _AIHUB_emit "output-error $_AIHUB_name notfile"; return 1; fi
  _AIHUB_size=$(_AIHUB_bb wc -c <"$_AIHUB_path") || return 1
  _AIHUB_size=$((_AIHUB_size + 0))
  if [ "$_AIHUB_size" -gt "${_AIHUB_TEXT_CAP:-1048576}" ]; then
    _AIHUB_emit "output-error $_AIHUB_name toolarge $_AIHUB_size"
    return 1
  fi
  _AIHUB_bb base64 "$_AIHUB_path" | while IFS= read -r _AIHUB_chunk || [ -n "$_AIHUB_chunk" ]; do
    _AIHUB_emit "text $_AIHUB_name $_AIHUB_chunk"
  done
  _AIHUB_emit "text-end $_AIHUB_name"
}

_AIHUB_post() {
  # POST file $1 to the API path $2 (with query), with the run token
  case $_AIHUB_api in
    http://*) ;;
    *) _AIHUB_note "uploads need an http:// AI_HUB_API_URL, not $_AIHUB_api"; return 1 ;;
  esac
  _AIHUB_send POST "$1" "$_AIHUB_api$2" "$_AIHUB_auth"
}

_AIHUB_send() {
  # METHOD ($1) the file $2 to the http:// URL $3, with the header line $4 (may be empty); the raw reply
  # goes to $_AIHUB_TMP/reply. busybox wget cannot send binary data (nor data larger than memory), so this
  # is HTTP/1.0 over busybox nc: the request streams in through a FIFO kept open until the server has
  # answered and closed. A URL's query (a presigned URL's signature) is never printed.
  case $3 in
    http://*) ;;
    *) _AIHUB_note "$1 ${3%%\?*}: only http:// URLs can be sent to"; return 1 ;;
  esac
  _AIHUB_rest=${3#http://}
  _AIHUB_hostport=${_AIHUB_rest%%/*}
  _AIHUB_target=${_AIHUB_rest#"$_AIHUB_hostport"}
  [ -n "$_AIHUB_target" ] || _AIHUB_target=/
  _AIHUB_host=${_AIHUB_hostport%:*}
  _AIHUB_port=${_AIHUB_hostport##*:}
  [ "$_AIHUB_port" != "$_AIHUB_hostport" ] || _AIHUB_port=80
  _AIHUB_len=$(_AIHUB_bb wc -c <"$2") || return 1
  _AIHUB_len=$((_AIHUB_len + 0))
  _AIHUB_bb rm -f "$_AIHUB_TMP/request" "$_AIHUB_TMP/reply"
  _AIHUB_bb mkfifo "$_AIHUB_TMP/request" || return 1
  (
    _AIHUB_bb nc "$_AIHUB_host" "$_AIHUB_port" <"$_AIHUB_TMP/request" >"$_AIHUB_TMP/reply" &
    _AIHUB_nc=$!
    exec 3>"$_AIHUB_TMP/request"
    (
      printf '%s %s HTTP/1.0\r\nHost: %s\r\n' "$1" "$_AIHUB_target" "$_AIHUB_hostport"
      [ -z "$4" ] || printf '%s\r\n' "$4"
      printf 'Content-Type: application/gzip\r\nContent-Length: %s\r\nConnection: close\r\n\r\n' "$_AIHUB_len"
      _AIHUB_bb cat "$2"
    ) >&3
    wait "$_AIHUB_nc"
  )
  _AIHUB_bb rm -f "$_AIHUB_TMP/request"
  _AIHUB_status_line=$(_AIHUB_bb head -n 1 "$_AIHUB_TMP/reply" 2>/dev/null | _AIHUB_bb tr -d '\r')
  case $_AIHUB_status_line in
    "HTTP/1."?" 200 "*) return 0 ;;
  esac
  _AIHUB_note "$1 ${3%%\?*}: ${_AIHUB_status_line:-no answer}"
  return 1
}

_AIHUB_upload() {
  _AIHUB_name=$1 _AIHUB_path=$2 _AIHUB_url=$3
  if [ ! -e "$_AIHUB_path" ]; then _AIHUB_emit "output-error $_AIHUB_name missing"; return 1; fi
  _AIHUB_archive=$_AIHUB_TMP/output.tgz
  if [ -d "$_AIHUB_path" ]; then
    _AIHUB_kind=dir
    _AIHUB_bb tar -czf "$_AIHUB_archive" -C "$_AIHUB_path" . 2>"$_AIHUB_TMP/tar.err"
  else
    _AIHUB_kind=file
    _AIHUB_dir=${_AIHUB_path%/*}
    [ -n "$_AIHUB_dir" ] || _AIHUB_dir=/
    _AIHUB_bb tar -czhf "$_AIHUB_archive" -C "$_AIHUB_dir" "./${_AIHUB_path##*/}" 2>"$_AIHUB_TMP/tar.err"
  fi
  if [ "$?" -ne 0 ]; then
    _AIHUB_bb cat "$_AIHUB_TMP/tar.err"
    _AIHUB_emit "output-error $_AIHUB_name pack"
    return 1
  fi
  # straight into the object store (the engine takes it from there) when there is a presigned URL
  if [ -n "$_AIHUB_url" ]; then
    if _AIHUB_send PUT "$_AIHUB_archive" "$_AIHUB_url" ""; then
      _AIHUB_bb rm -f "$_AIHUB_archive"
      _AIHUB_emit "upload $_AIHUB_name $_AIHUB_kind"
      return 0
    fi
    _AIHUB_note "output '$_AIHUB_name': the direct upload failed; sending it through $_AIHUB_api"
  fi
  if ! _AIHUB_post "$_AIHUB_archive" "/artifacts/upload?kind=$_AIHUB_kind&output=$_AIHUB_name"; then
    _AIHUB_note "output '$_AIHUB_name': upload to $_AIHUB_api failed"
    _AIHUB_emit "output-error $_AIHUB_name upload"
    return 1
  fi
  _AIHUB_bb rm -f "$_AIHUB_archive"
  _AIHUB_digest=$(_AIHUB_bb sed -n 's/.*"digest" *: *"\([0-9a-f]\{64\}\)".*/\1/p' "$_AIHUB_TMP/reply")
  _AIHUB_size=$(_AIHUB_bb sed -n 's/.*"size" *: *\([0-9][0-9]*\).*/\1/p' "$_AIHUB_TMP/reply")
  if [ -z "$_AIHUB_digest" ] || [ -z "$_AIHUB_size" ]; then
    _AIHUB_note "output '$_AIHUB_name': unexpected reply to the upload"
    _AIHUB_emit "output-error $_AIHUB_name upload"
    return 1
  fi
  _AIHUB_emit "path $_AIHUB_name $_AIHUB_digest $_AIHUB_size"
}

_AIHUB_i=0
while [ "$_AIHUB_i" -lt "${_AIHUB_IN_COUNT:-0}" ]; do
  eval "_AIHUB_n=\$_AIHUB_in_${_AIHUB_i}_NAME _AIHUB_d=\$_AIHUB_in_${_AIHUB_i}_DIGEST"
  eval "_AIHUB_k=\$_AIHUB_in_${_AIHUB_i}_KIND _AIHUB_p=\$_AIHUB_in_${_AIHUB_i}_PATH"
  eval "_AIHUB_u=\$_AIHUB_in_${_AIHUB_i}_URL"
  if ! _AIHUB_fetch "$_AIHUB_n" "$_AIHUB_d" "$_AIHUB_k" "$_AIHUB_p" "$_AIHUB_u"; then
    _AIHUB_emit "input-error input '$_AIHUB_n': cannot fetch it to $_AIHUB_p"
    exit 1
  fi
  _AIHUB_i=$((_AIHUB_i + 1))
done

# SIGTERM (pod deletion) goes to the command; one arriving before its pid is known is passed on after.
_AIHUB_child=
_AIHUB_term=
trap '_AIHUB_term=1; [ -z "$_AIHUB_child" ] || kill -TERM "$_AIHUB_child" 2>/dev/null' TERM
"$@" &
_AIHUB_child=$!
[ -z "$_AIHUB_term" ] || kill -TERM "$_AIHUB_child" 2>/dev/null
while :; do
  wait "$_AIHUB_child" 2>/dev/null  # (no "Terminated" job report of the shell in the node's log)
  _AIHUB_status=$?
  kill -0 "$_AIHUB_child" 2>/dev/null || break
done
trap - TERM
_AIHUB_emit "exit $_AIHUB_status"
if [ "$_AIHUB_status" -eq 0 ]; then
  _AIHUB_i=0
  while [ "$_AIHUB_i" -lt "${_AIHUB_OUT_COUNT:-0}" ]; do
    eval "_AIHUB_n=\$_AIHUB_out_${_AIHUB_i}_NAME _AIHUB_t=\$_AIHUB_out_${_AIHUB_i}_TYPE"
    eval "_AIHUB_p=\$_AIHUB_out_${_AIHUB_i}_PATH _AIHUB_u=\$_AIHUB_out_${_AIHUB_i}_URL"
    if [ "$_AIHUB_t" = text ]; then
      _AIHUB_text "$_AIHUB_n" "$_AIHUB_p" || break
    else
      _AIHUB_upload "$_AIHUB_n" "$_AIHUB_p" "$_AIHUB_u" || break
    fi
    _AIHUB_i=$((_AIHUB_i + 1))
  done
fi
_AIHUB_emit done
exit "$_AIHUB_status"
"""


class LaunchError(Exception):
    """The job cannot become a pod (bad path, reserved variable, storage without volume, ...)."""


@dataclass(frozen=True)
class PodOptions:
    namespace: str
    helper_image: str  # has a static /bin/busybox
    default_image: str  # for plain nodes that name no image


def pod_name(key: JobKey) -> str:
    """``aihub-r{run}-{node}-a{attempt}``, DNS-safe; a hash suffix keeps it unique when the node name had
    to be changed (upper case, ``_``) or shortened."""
    node = key.node.lower().replace("_", "-")
    name = f"aihub-r{key.run_id}-{node}-a{key.attempt}"
    if node == key.node and len(name) <= _DNS_LABEL_MAX:
        return name
    digest = hashlib.sha256(key.slug.encode()).hexdigest()[:8]
    room = _DNS_LABEL_MAX - len(f"aihub-r{key.run_id}--a{key.attempt}-{digest}")
    return f"aihub-r{key.run_id}-{node[: max(room, 0)]}-a{key.attempt}-{digest}"


def label_value(value: str) -> str:
    """``value`` as a valid label value: kept when it is one, else sanitised with a hash suffix."""
    if len(value) <= _DNS_LABEL_MAX and _LABEL_VALUE.fullmatch(value):
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    cleaned = re.sub(r"[^-A-Za-z0-9_.]", "-", value)[: _DNS_LABEL_MAX - 9].strip("-_.")
    return f"{cleaned}-{digest}" if cleaned else digest


def key_selector(key: JobKey) -> str:
    """The label selector of the pod of ``key`` (the ``aihub/key`` annotation tells look-alikes apart)."""
    return f"{LABEL_RUN}={key.run_id},{LABEL_NODE}={label_value(key.node)},{LABEL_ATTEMPT}={key.attempt}"


def key_annotation(key: JobKey) -> str:
    return json.dumps({"run_id": key.run_id, "node": key.node, "attempt": key.attempt}, sort_keys=True)


def build_pod(
    job: Job,
    options: PodOptions,
    *,
    mark: str,
    input_kinds: dict[str, Literal["file", "dir"]],
    urls: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The pod manifest of ``job``; ``input_kinds`` says, per input name, whether its archive holds a file
    or a directory; ``mark`` prefixes the wrapper's marker lines; ``urls`` (``in:NAME`` / ``out:NAME``) are
    the attempt's presigned object-store URLs, if the store gives any. Raises :class:`LaunchError`."""
    if not job.argv:
        raise LaunchError("nothing to run: the command is empty")
    main = _main_container(job, options, _env(job, mark, input_kinds, urls or {}))
    storages, mounts = _storages(job)
    main["volumeMounts"].extend(mounts)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(job.key),
            "namespace": options.namespace,
            "labels": _labels(job),
            "annotations": _annotations(job, mark),
        },
        "spec": _pod_spec(job, _init_container(job, options), main, storages),
    }


def _init_container(job: Job, options: PodOptions) -> dict[str, Any]:
    """Copies the helper image's static busybox into the ``aihub-tools`` volume."""
    return {
        "name": INIT_CONTAINER,
        "image": options.helper_image,
        "command": ["/bin/busybox", "sh", "-c", INIT_SCRIPT],
        "volumeMounts": [{"name": "aihub-tools", "mountPath": TOOLS_DIR}],
        # cpu/memory as the main container: they do not add to the pod's request, and keep QoS Guaranteed
        "resources": {
            k: {r: v for r, v in q.items() if r != GPU_RESOURCE} for k, q in _resources(job).items()
        },
    }


def _main_container(job: Job, options: PodOptions, env: list[dict[str, str]]) -> dict[str, Any]:
    """The node's image running the wrapper, which runs the node's argv."""
    main: dict[str, Any] = {
        "name": MAIN_CONTAINER,
        "image": job.image or options.default_image,
        "command": [BUSYBOX, "sh", "-c", WRAPPER, "aihub", *job.argv],
        "env": env,
        "resources": _resources(job),
        "volumeMounts": [
            {"name": "aihub-tools", "mountPath": TOOLS_DIR},
            {"name": "aihub-workflow-space", "mountPath": WORKFLOW_SPACE},
        ],
    }
    if job.workdir:
        main["workingDir"] = _checked_path(job.workdir, "working directory")
    return main


def _storages(job: Job) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The volumes of the job's data storages and their mounts in the main container."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for index, storage in enumerate(job.storages):
        if not storage.volume:
            raise LaunchError(f"storage '{storage.name}' has no Kubernetes volume configured")
        name = f"storage-{index}"
        volumes.append({**storage.volume, "name": name})
        path = _checked_path(storage.path, f"storage '{storage.name}'")
        mounts.append({"name": name, "mountPath": path, "readOnly": storage.read_only})
    return volumes, mounts


def _pod_spec(
    job: Job, init: dict[str, Any], main: dict[str, Any], storages: list[dict[str, Any]]
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # nodes get the platform's API, not the cluster's
        "enableServiceLinks": False,
        "initContainers": [init],
        "containers": [main],
        "volumes": [
            {"name": "aihub-tools", "emptyDir": {}},
            {"name": "aihub-workflow-space", "emptyDir": {}},
            *storages,
        ],
    }
    if job.resources.node_selector:
        spec["nodeSelector"] = dict(job.resources.node_selector)
    if job.resources.gpu:
        spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return spec


def _resources(job: Job) -> dict[str, dict[str, str]]:
    res = job.resources
    amounts = {"cpu": f"{res.cpu_millis}m", "memory": f"{res.memory_mib}Mi"}
    if res.gpu:
        amounts[GPU_RESOURCE] = str(res.gpu)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _labels(job: Job) -> dict[str, str]:
    labels = {k: label_value(v) for k, v in job.labels.items() if _valid_label_key(k)}
    labels[LABEL_RUN] = str(job.key.run_id)
    labels[LABEL_NODE] = label_value(job.key.node)
    labels[LABEL_ATTEMPT] = str(job.key.attempt)
    return labels


def _valid_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= _DNS_LABEL_MAX and bool(_LABEL_NAME.fullmatch(name))


def _annotations(job: Job, mark: str) -> dict[str, str]:
    annotations = {
        ANNOTATION_KEY: key_annotation(job.key),
        ANNOTATION_OUTPUTS: json.dumps(
            [{"name": o.name, "path": o.path, "type": o.type} for o in job.outputs]
        ),
        ANNOTATION_MAX_TEXT: str(job.max_text_output),
        ANNOTATION_MARK: mark,
    }
    if job.resources.gpu_type:
        annotations["aihub/gpu-type"] = job.resources.gpu_type
    return annotations


def _env(
    job: Job, mark: str, input_kinds: dict[str, Literal["file", "dir"]], urls: Mapping[str, str]
) -> list[dict[str, str]]:
    env = []
    for name, value in job.env.items():
        if name.upper().startswith(RESERVED_ENV_PREFIX):
            raise LaunchError(f"environment variable {name}: names starting with _AIHUB_ are reserved")
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise LaunchError(f"environment variable {name!r}: invalid name or value")
        env.append({"name": name, "value": value})
    wrapper = {
        "BB": BUSYBOX,
        "MARK": mark,
        "TMP": f"{TOOLS_DIR}/tmp",
        "TEXT_CAP": str(TEXT_CAP_BYTES),
        "IN_COUNT": str(len(job.artifacts_in)),
        "OUT_COUNT": str(len(job.outputs)),
    }
    for i, art in enumerate(job.artifacts_in):
        path = _checked_path(art.path, f"input '{art.name}'")
        wrapper.update(
            {f"IN_{i}_NAME": art.name, f"IN_{i}_DIGEST": art.digest, f"IN_{i}_PATH": path}
            | {f"IN_{i}_KIND": input_kinds[art.name]}
        )
        if f"in:{art.name}" in urls:
            wrapper[f"IN_{i}_URL"] = urls[f"in:{art.name}"]
    for i, out in enumerate(job.outputs):
        path = _checked_path(out.path, f"output '{out.name}'")
        wrapper.update({f"OUT_{i}_NAME": out.name, f"OUT_{i}_TYPE": out.type, f"OUT_{i}_PATH": path})
        if f"out:{out.name}" in urls:
            wrapper[f"OUT_{i}_URL"] = urls[f"out:{out.name}"]
    env.extend({"name": RESERVED_ENV_PREFIX + k, "value": v} for k, v in wrapper.items())
    return env


def _checked_path(path: str, what: str) -> str:
    """An absolute, normalised path without control characters, other than ``/``."""
    if not path.startswith("/"):
        raise LaunchError(f"{what}: {path!r} is not an absolute path")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise LaunchError(f"{what}: {path!r} contains control characters")
    normal = "/" + posixpath.normpath(path).lstrip("/")
    if normal == "/":
        raise LaunchError(f"{what}: the root directory cannot be used")
    return normal
