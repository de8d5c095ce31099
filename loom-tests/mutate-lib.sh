# Shared by loom-tests/mutations.sh and loom-tests/engine-mutations.sh (sourced).

# replace FILE OLD NEW: replaces the one occurrence of OLD in FILE by NEW; fails unless OLD
# occurs exactly once.
replace() {
    python3 - "$1" "$2" "$3" <<'EOF'
import sys
path, old, new = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(path).read()
n = text.count(old)
if n != 1:
    sys.exit(f"{path}: the text to mutate occurs {n} times, not once:\n{old}")
open(path, "w").write(text.replace(old, new))
EOF
}

# applies FILE OLD: succeeds if OLD occurs exactly once in FILE (changes nothing).
applies() {
    python3 - "$1" "$2" <<'EOF'
import sys
path, old = sys.argv[1], sys.argv[2]
n = open(path).read().count(old)
if n != 1:
    sys.exit(f"{path}: the text to mutate occurs {n} times, not once:\n{old}")
EOF
}

# select_mutations ARGS...: sets `selected` (the mutation names asked for; empty: all of them)
# and `check_only` (1 when `--check` is among the arguments: only check that they apply).
select_mutations() {
    check_only=0
    selected=()
    local arg
    for arg in "$@"; do
        if [[ "$arg" == --check ]]; then
            check_only=1
        else
            selected+=("$arg")
        fi
    done
}
