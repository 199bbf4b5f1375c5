// The page's wiring: load the models, samples and colormaps, then run the API each time
// the network or the photo changes, or, when "in this browser" is chosen, classify the
// photo here with onnxruntime-web and send the server no photo at all. Each concern lives
// in its own module. Every text shown comes from i18n.js (how to add one: its header).

import { getJSON, postForm } from "./api.js";
import { BrowserClassifier, describeRun } from "./browser_inference.js";
import { CamView } from "./cam.js";
import { msg, PageError, say, startI18n } from "./i18n.js";
import { LayerView } from "./layers.js";
import { startMenu } from "./menu.js";
import { clearPredictions, renderPredictions, renderTop } from "./predictions.js";
import { ImagePicker } from "./source.js";

const $ = (id) => document.getElementById(id);

const main = $("main");
const modelSelect = $("model");
const methodSelect = $("method");
const statusLine = $("status");
const errorBox = $("error");
const inBrowser = $("where-browser");
const useGpu = $("use-gpu");
const browserNote = $("browser-note");
const backendLine = $("backend");

const browser = new BrowserClassifier();

const cam = new CamView({
  canvas: $("cam"),
  colormapSelect: $("colormap"),
  opacityInput: $("opacity"),
  opacityOutput: $("opacity-value"),
});

const layers = new LayerView({
  table: $("layers"),
  grid: $("activations"),
  caption: $("activations-title"),
  onPick: showActivations,
});

const picker = new ImagePicker({
  samples: $("samples"),
  fileInput: $("file"),
  dropZone: $("drop"),
  urlForm: $("url-form"),
  urlInput: $("url"),
  onChange: analyse,
  onError: showError,
});

// Answers to an older choice must not overwrite a newer one.
let generation = 0;

// The page's own errors carry a message of the tables (error.text); the server's are shown
// as it words them.
function showError(error) {
  say(errorBox, error.text ?? error.message);
  errorBox.hidden = false;
}

function clearError() {
  errorBox.hidden = true;
  say(errorBox, "");
}

// `message`: msg(key, params), or "" to clear.
function setStatus(message) {
  say(statusLine, message);
}

function showBrowserNote(message) {
  say(browserNote, message);
  browserNote.hidden = !message;
}

// Where the last answer was computed; data-backend is for tests and scripts.
function showBackend(where, backend) {
  backendLine.dataset.backend = backend ?? "";
  if (!where) {
    say(backendLine, "");
  } else if (where === "browser") {
    say(backendLine, msg("run.where_browser", { backend }));
  } else {
    const runtime = backend === "onnx" ? "ONNX Runtime" : "Keras";
    say(backendLine, msg("run.where_server", { runtime }));
  }
}

// Classify the current photo on the server, then draw its CAM; or classify it in this
// browser. main's data-analysis says where this stands ("running", "done", "failed"):
// the page's tests wait on it.
async function analyse() {
  const image = picker.fields();
  if (!image) return;
  const mine = ++generation;
  const fields = { model: modelSelect.value, ...image };
  const label = modelSelect.selectedOptions[0]?.textContent ?? modelSelect.value;
  clearError();
  main.dataset.analysis = "running";
  $("image-name").textContent = picker.current.label;
  if (inBrowser.checked) {
    await analyseInBrowser(mine, label);
    return;
  }
  setStatus(msg("status.classifying", { model: label }));
  try {
    const started = performance.now();
    const prediction = await postForm("/api/predict", { ...fields, top: 5 });
    if (mine !== generation) return;
    renderPredictions($("top"), $("timing"), prediction, performance.now() - started);
    showBackend("server", prediction.runtime);
  } catch (error) {
    if (mine !== generation) return;
    clearPredictions($("top"), $("timing"));
    showBackend(null);
    cam.clear();
    say($("cam-caption"), "");
    fail(error);
    return;
  }
  await explain(fields, mine);
}

// Classify the current photo here: no forward pass, and no photo, goes to the server. The
// class activation map needs the Keras model, so it is left to the server mode.
async function analyseInBrowser(mine, label) {
  setStatus(msg("status.classifying_browser", { model: label }));
  cam.clear();
  say($("cam-caption"), msg("cam.server_only"));
  try {
    const photo = await picker.blob();
    const result = await browser.classify(modelSelect.value, photo, { gpu: useGpu.checked });
    if (mine !== generation) return;
    renderTop($("top"), result.top);
    say($("timing"), describeRun(result));
    showBackend("browser", result.backend);
    showBrowserNote(result.note);
    setStatus("");
    main.dataset.analysis = "done";
  } catch (error) {
    if (mine !== generation) return;
    clearPredictions($("top"), $("timing"));
    showBackend(null);
    fail(error);
  }
}

// Draw the CAM with the chosen method; the predictions above it stay as they are.
async function explain(fields, mine) {
  main.dataset.analysis = "running";
  setStatus(msg("status.explaining"));
  try {
    const explanation = await postForm("/api/explain", { ...fields, method: methodSelect.value });
    if (mine !== generation) return;
    await cam.show(explanation);
    say(
      $("cam-caption"),
      msg("cam.caption", {
        method: explanation.method,
        class: explanation.class_name,
        percent: (explanation.probability * 100).toFixed(1),
        layer: explanation.layer,
      }),
    );
    setStatus("");
    main.dataset.analysis = "done";
  } catch (error) {
    if (mine !== generation) return;
    cam.clear();
    say($("cam-caption"), "");
    fail(error);
  }
}

function fail(error) {
  setStatus("");
  showError(error);
  main.dataset.analysis = "failed";
}

function changeMethod() {
  const image = picker.fields();
  if (!image || inBrowser.checked) return;
  clearError();
  explain({ model: modelSelect.value, ...image }, ++generation);
}

function changeWhere() {
  useGpu.disabled = !inBrowser.checked;
  showBrowserNote("");
  analyse();
}

async function showActivations(layer) {
  const image = picker.fields();
  if (!image) {
    showError(new PageError("error.pick_photo"));
    return;
  }
  clearError();
  setStatus(msg("status.activations", { layer }));
  try {
    layers.showActivations(
      await postForm("/api/activations", { model: modelSelect.value, layer, ...image }),
    );
    setStatus("");
  } catch (error) {
    setStatus("");
    showError(error);
  }
}

async function loadLayers() {
  layers.clear();
  try {
    const { layers: list } = await getJSON(
      `/api/layers?model=${encodeURIComponent(modelSelect.value)}`,
    );
    layers.show(list);
  } catch (error) {
    showError(error);
  }
}

async function chooseModel() {
  const entry = modelSelect.selectedOptions[0];
  say($("model-note"), entry.dataset.loaded === "true" ? "" : msg("inputs.model_loading"));
  await Promise.all([loadLayers(), analyse()]);
  entry.dataset.loaded = "true";
  say($("model-note"), "");
}

async function start() {
  startMenu();
  try {
    const [models, , colormaps, runtime] = await Promise.all([
      getJSON("/api/models"),
      startI18n(),
      getJSON("/api/colormaps"),
      browser.status(),
      picker.loadSamples(),
    ]);
    if (!runtime.available) {
      inBrowser.disabled = true;
      showBrowserNote(runtime.message);
    }
    picker.uploadLimit = models.upload_limit;
    cam.setColormaps(colormaps.colormaps, colormaps.default);
    modelSelect.replaceChildren(
      ...models.models.map((model) => {
        const option = new Option(model.label, model.name, false, model.name === models.default);
        option.dataset.loaded = String(model.loaded);
        option.dataset.kind = model.kind;
        return option;
      }),
    );
    if (!models.models.length) {
      showError(new PageError("error.no_models"));
      return;
    }
    modelSelect.disabled = false;
    modelSelect.addEventListener("change", chooseModel);
    methodSelect.addEventListener("change", changeMethod);
    for (const choice of document.querySelectorAll('input[name="where"]')) {
      choice.addEventListener("change", changeWhere);
    }
    useGpu.addEventListener("change", () => {
      if (inBrowser.checked) analyse();
    });
    await loadLayers();
  } catch (error) {
    showError(error);
  }
}

start();
