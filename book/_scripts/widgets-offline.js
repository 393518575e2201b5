// Loaded on every page with widgets, after require.js and before embed-amd.js (see book/_config.yml).
// book/_scripts/fetch_widget_js.sh copies it into book/_widgets/_widgets/.
(function () {
  "use strict";
  var fonts = new URL("fonts/", document.currentScript.src).href;

  // embed-amd.js defines its modules by name, so requirejs reports their location relative to the
  // page (notebooks/@jupyter-widgets/...), and webpack resolves the widget CSS's font files against
  // that folder. Pointing every bundled module at the fonts folder makes those URLs real files,
  // from any page depth. The bundle defines these modules itself, so nothing is fetched from there.
  var bundled = ["base", "base7", "controls", "controls7", "html-manager", "html-manager/dist/libembed-amd"];
  var paths = {};
  bundled.forEach(function (name) {
    paths["@jupyter-widgets/" + name] = fonts + name.replace(/\//g, "-");
  });
  window.requirejs.config({ paths: paths });
  window.__jupyter_widgets_assets_path__ = fonts;

  // ipywidgets 8 typesets labels through MathJax 2's MathJax.Hub.Queue, while Sphinx ships MathJax 3;
  // without this bridge every widget with a description throws on a page that also has math.
  // Widgets render on "load" and this listener is registered first, so the bridge is in place.
  window.addEventListener("load", function () {
    var mj = window.MathJax;
    if (!mj || mj.Hub || !mj.startup) return;
    mj.Hub = {
      Queue: function (job) {
        var element = job && job[2];
        mj.startup.promise
          .then(function () { return mj.typesetPromise(element ? [element] : undefined); })
          .catch(function (err) { console.warn("MathJax typesetting of a widget failed", err); });
      },
    };
  });
})();
