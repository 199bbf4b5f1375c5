// The page's wiring: load the models, samples and colormaps, then run the API each time
// the network or the photo changes, or, when "in this browser" is chosen, classify the
// photo here with onnxruntime-web and send the server no photo at all. Each concern lives
// in its own module.

import { getJSON, postForm } from "./api.js";
import { BrowserClassifier, describeRun } from "./browser_inference.js";
import { CamView } from "./cam.js";
import { LayerView } from "./layers.js";
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

function showError(error) {
  errorBox.textContent = error.message;
  errorBox.hidden = false;
}

function clearError() {
  errorBox.hidden = true;
  errorBox.textContent = "";
}

function setStatus(text) {
  statusLine.textContent = text;
}

function showBrowserNote(text) {
  browserNote.textContent = text;
  browserNote.hidden = !text;
}

// Where the last answer was computed; data-backend is for tests and scripts.
function showBackend(where, backend) {
  backendLine.dataset.backend = backend ?? "";
  if (!where) {
    backendLine.textContent = "";
  } else if (where === "browser") {
    backendLine.textContent = `Ran in this browser on ${backend}`;
  } else {
    const runtime = backend === "onnx" ? "ONNX Runtime" : "Keras";
    backendLine.textContent = `Ran on the server with ${runtime}`;
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
  setStatus(`Classifying with ${label}...`);
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
    $("cam-caption").textContent = "";
    fail(error);
    return;
  }
  await explain(fields, mine);
}

// Classify the current photo here: no forward pass, and no photo, goes to the server. The
// class activation map needs the Keras model, so it is left to the server mode.
async function analyseInBrowser(mine, label) {
  setStatus(`Classifying in this browser with ${label}...`);
  cam.clear();
  $("cam-caption").textContent =
    "Class activation maps are computed on the server: run the network there to see one.";
  try {
    const photo = await picker.blob();
    const result = await browser.classify(modelSelect.value, photo, { gpu: useGpu.checked });
    if (mine !== generation) return;
    renderTop($("top"), result.top);
    $("timing").textContent = describeRun(result);
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
  setStatus("Computing the class activation map...");
  try {
    const explanation = await postForm("/api/explain", { ...fields, method: methodSelect.value });
    if (mine !== generation) return;
    await cam.show(explanation);
    $("cam-caption").textContent =
      `${explanation.method} for "${explanation.class_name}" ` +
      `(${(explanation.probability * 100).toFixed(1)}%), layer ${explanation.layer}`;
    setStatus("");
    main.dataset.analysis = "done";
  } catch (error) {
    if (mine !== generation) return;
    cam.clear();
    $("cam-caption").textContent = "";
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
    showError(new Error("Pick a photo first: feature maps are computed for a photo."));
    return;
  }
  clearError();
  setStatus(`Computing the feature maps of ${layer}...`);
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
  $("model-note").textContent =
    entry.dataset.loaded === "true" ? "" : "The first use loads the network (a few seconds).";
  await Promise.all([loadLayers(), analyse()]);
  entry.dataset.loaded = "true";
  $("model-note").textContent = "";
}

async function start() {
  try {
    const [models, colormaps, runtime] = await Promise.all([
      getJSON("/api/models"),
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
      showError(new Error("No network is available: see 'imgrec zoo' for the weights."));
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
