# Sourced by the bench scripts: `need TOOL...` installs, from Debian's packages, the tools of
# the list that are not on PATH (taskset comes with util-linux, ss with iproute2).
need() {
  local missing=() tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  local pkgs=()
  for tool in "${missing[@]}"; do
    case $tool in taskset) pkgs+=(util-linux) ;; ss) pkgs+=(iproute2) ;; *) pkgs+=("$tool") ;; esac
  done
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
}
