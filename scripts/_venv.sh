# Sourced by the scripts: make .venv with the project, its extras and the development
# dependency groups, once and when pyproject.toml changes.
# SESSIONMETA_EXTRAS picks the extras users install (default: all of them);
# SESSIONMETA_GROUPS the dependency groups of pyproject.toml (default: dev, the tools the
# tests and checks need; bench for the benchmarks; empty for none).
set -euo pipefail
extras="${SESSIONMETA_EXTRAS:-postgres,psycopg,mysql,agents,fastapi,web,encryption}"
groups="${SESSIONMETA_GROUPS-dev}"
venv="${SESSIONMETA_VENV:-.venv}"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "sessionmeta needs Python 3.10 or newer; $python is $("$python" --version 2>&1)" >&2
    exit 2
fi
stamp="$venv/.sessionmeta-installed-$(echo "$extras" | tr ',' '-')-groups-$(echo "$groups" | tr ',' '-')"
group_options=()
for group in ${groups//,/ }; do
    group_options+=(--group "$group")
done
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    # pip 25.1 is the first to install dependency groups (--group).
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25.1"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -e ".[$extras]" ${group_options[@]+"${group_options[@]}"}
    touch "$stamp"
fi
