#!/usr/bin/env bash
# Vendor the browser scripts the book needs, so that every page works offline:
#   ipywidgets' embed manager (@jupyter-widgets/html-manager) and its loader (requirejs),
#   the font files the widget CSS points at, and MathJax (Sphinx would take it from a CDN).
#
# npm installs the pinned packages once into ~/.cache/sparsegap/npm-<versions>; later runs reuse them
# and only copy. Everything lands in book/_widgets/ (gitignored), which _config.yml hands to Sphinx as
# an html_extra_path: its contents are copied over the root of the built site, hence the inner folders.
#
#   usage: bash book/_scripts/fetch_widget_js.sh [BOOK_DIR]   (default: the book this script lives in)
set -euo pipefail

HTML_MANAGER=1.0.15   # @jupyter-widgets/html-manager 1.0.x renders ipywidgets 8 state
REQUIREJS=2.3.8
MATHJAX=3.2.2         # Sphinx 7 emits MathJax 3 configuration

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
book_dir=${1:-"$(dirname "${here}")"}
cache="${HOME}/.cache/sparsegap/npm-html-manager${HTML_MANAGER}-requirejs${REQUIREJS}-mathjax${MATHJAX}"
modules="${cache}/node_modules"
stamp="${cache}/.installed"

if [[ ! -f "${stamp}" ]]; then
    command -v npm > /dev/null || { echo "fetch_widget_js.sh: npm is needed (apt-get install npm)" >&2; exit 1; }
    mkdir -p "${cache}"
    npm install --no-audit --no-fund --loglevel=error --prefix "${cache}" \
        "@jupyter-widgets/html-manager@${HTML_MANAGER}" "requirejs@${REQUIREJS}" "mathjax@${MATHJAX}"
    touch "${stamp}"
fi

manager="${modules}/@jupyter-widgets/html-manager/dist"
out="${book_dir}/_widgets"
# The overlay records what it was made from; an up-to-date one is left alone.
made_from="$(basename "${cache}") $(cat "${here}/widgets-offline.js" "${BASH_SOURCE[0]}" | sha1sum | cut -c1-12)"
if [[ -f "${out}/.made-from" && "$(cat "${out}/.made-from")" == "${made_from}" ]]; then
    exit 0
fi
# Build in a sibling folder and swap it in, so an interrupted copy never leaves a half-filled overlay.
tmp="$(mktemp -d "${book_dir}/._widgets.XXXXXX")"
trap 'rm -rf "${tmp}"' EXIT
chmod 755 "${tmp}"  # mktemp makes it private; a web server must read it
mkdir -p "${tmp}/_widgets/fonts" "${tmp}/_mathjax"

cp "${modules}/requirejs/require.js" "${tmp}/_widgets/require.js"
cp "${manager}/embed-amd.js" "${tmp}/_widgets/embed-amd.js"
# The widget CSS (font-awesome) refers to these by hashed file name, relative to an assets path.
cp "${manager}"/*.{woff2,woff,ttf,eot,svg} "${tmp}/_widgets/fonts/"

# Our glue between the bundle, its fonts and MathJax 3 (see the comments in the file).
cp "${here}/widgets-offline.js" "${tmp}/_widgets/widgets-offline.js"

# MathJax loads its extensions and fonts relative to its own URL, so copy the tree minus the other
# combined builds that the book never loads.
cp "${modules}/mathjax/es5/tex-mml-chtml.js" "${tmp}/_mathjax/"
cp -r "${modules}/mathjax/es5/"{input,output,a11y,ui,sre,adaptors} "${tmp}/_mathjax/"

echo "${made_from}" > "${tmp}/.made-from"
rm -rf "${out}"
mv "${tmp}" "${out}"
trap - EXIT
echo "widget scripts, fonts and MathJax are in ${out}"
