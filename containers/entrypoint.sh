#!/bin/sh
# Entry point of the smartbkg-prod worker images.
#
#   docker run IMAGE --job /data/job.json          -> smartbkg-prod worker --job /data/job.json
#   docker run IMAGE worker --job /data/job.json   -> the same
#   docker run IMAGE validate spec.yaml            -> any other smartbkg-prod command
#   apptainer exec IMAGE.sif python3 -c ...        -> not through here (exec bypasses it)
#
# `exec` replaces this shell, so the worker receives the engine's signals directly (SIGTERM
# from `docker stop` becomes a walltime report) and its exit code is the container's.
set -eu
case "${1:-}" in
    "") exec smartbkg-prod --help ;;
    --help | --version | worker | validate | plan | submit | status | monitor | recover | train | evaluate | build)
        exec smartbkg-prod "$@" ;;
    -*) exec smartbkg-prod worker "$@" ;;
    *) exec "$@" ;;
esac
