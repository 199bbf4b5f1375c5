// "Draw a digit": Keras.js's basic convnet demo. The person draws on a 240 x 240 canvas (mouse,
// finger or pen: pointer events); while they draw, the drawing goes through MNIST's own
// preprocessing (draw_preprocess.js) and the mnist-cnn of the server's models folder, and the
// page shows the ten probabilities and every layer's output (draw_layers.js).
//
// The network runs in this browser by default: the server hands over one ONNX export whose
// single output holds every layer's output (/api/digits/onnx.json says where each layer's
// part starts), run by onnxruntime-web with nothing sent back. "On the server" posts the
// canvas as a PNG to /api/digits/predict instead, which runs the same preprocessing in Python
// (imgrec.core.digits) and the same every-layer model in Keras, and answers the same vector.

import { getJSON, postForm } from "../api.js";
import { BrowserClassifier } from "../browser_inference.js";
import { msg, PageError, say, startI18n } from "../i18n.js";
import { startMenu } from "../menu.js";
import { inkFromRGBA, MNIST_SIZE, mnistDigit } from "./draw_preprocess.js";
import { LayerPictures } from "./draw_layers.js";

const PEN_WIDTH = 18; // canvas pixels: about 2 MNIST pixels once the digit is fitted
const $ = (id) => document.getElementById(id);

const main = $("draw");
const canvas = $("draw-canvas");
const pen = canvas.getContext("2d", { willReadFrequently: true });
const picture = $("draw-input-picture");
const layers = new LayerPictures($("draw-layers"));
const classifier = new BrowserClassifier();

const state = {
  demo: null, // /api/digits's answer
  description: null, // /api/digits/onnx.json's answer, once fetched
  classNames: [],
  inked: false, // anything drawn since the last clear
  dirty: false, // drawn since the last run started
  running: false,
  last: null, // the last point of the stroke being drawn
};

function where() {
  return $("draw-server").checked ? "server" : "browser";
}

function showError(error) {
  const box = $("draw-error");
  if (!error) {
    box.hidden = true;
    say(box, "");
    return;
  }
  box.hidden = false;
  say(box, error instanceof PageError ? error.text : error.message);
}

// ---- the canvas ------------------------------------------------------------------------

function blank() {
  pen.fillStyle = "#fff";
  pen.fillRect(0, 0, canvas.width, canvas.height);
}

function point(event) {
  const box = canvas.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * canvas.width) / box.width,
    y: ((event.clientY - box.top) * canvas.height) / box.height,
  };
}

function dot({ x, y }) {
  pen.fillStyle = "#000";
  pen.beginPath();
  pen.arc(x, y, PEN_WIDTH / 2, 0, 2 * Math.PI);
  pen.fill();
}

function line(from, to) {
  pen.strokeStyle = "#000";
  pen.lineWidth = PEN_WIDTH;
  pen.lineCap = "round";
  pen.lineJoin = "round";
  pen.beginPath();
  pen.moveTo(from.x, from.y);
  pen.lineTo(to.x, to.y);
  pen.stroke();
}

function startCanvas() {
  blank();
  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    state.last = point(event);
    dot(state.last);
    drawn();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!state.last) return;
    // A fast pen sends several positions per frame: draw through all of them.
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const each of events.length ? events : [event]) {
      const next = point(each);
      line(state.last, next);
      state.last = next;
    }
    drawn();
  });
  const end = () => {
    if (!state.last) return;
    state.last = null;
    drawn();
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  $("draw-clear").addEventListener("click", clear);
}

function clear() {
  blank();
  state.inked = false;
  state.dirty = false;
  picture.getContext("2d").clearRect(0, 0, MNIST_SIZE, MNIST_SIZE);
  for (const item of $("draw-digits").children) show(item, 0, false);
  layers.clear();
  say($("draw-timing"), "");
  showError(null);
  if (!state.running && state.demo?.model) main.dataset.state = "ready";
  delete main.dataset.digit;
}

// ---- running the network, one run at a time, always on the latest drawing ------------------

function drawn() {
  state.inked = true;
  state.dirty = true;
  if (!state.demo?.model) return;
  main.dataset.state = "busy";
  if (!state.running) run();
}

async function run() {
  state.running = true;
  try {
    while (state.dirty && state.inked) {
      state.dirty = false;
      try {
        const result = where() === "server" ? await onServer() : await inBrowser();
        if (state.inked) showResult(result);
        showError(null);
      } catch (error) {
        showError(error);
        main.dataset.state = "failed";
        return;
      }
    }
    main.dataset.state = state.inked ? "done" : "ready";
  } finally {
    state.running = false;
  }
}

// The drawing as MNIST's 28 x 28 digit, computed here.
function digitHere() {
  const { data } = pen.getImageData(0, 0, canvas.width, canvas.height);
  return mnistDigit(inkFromRGBA(data), canvas.width, canvas.height);
}

async function description() {
  if (!state.description) {
    say($("draw-note"), msg("draw.preparing"));
    try {
      state.description = await getJSON("/api/digits/onnx.json");
    } finally {
      say($("draw-note"), "");
    }
  }
  return state.description;
}

async function inBrowser() {
  const digit = digitHere();
  const described = await description();
  const prepared = await classifier.session(described, "wasm");
  const input = { data: Float32Array.from(digit), dims: [1, ...described.input] };
  const { ms, output } = await classifier.run(prepared, input);
  return {
    digit,
    values: output,
    classNames: described.class_names,
    layers: described.layers,
    timing: msg("draw.run_browser", { ms: ms.toFixed(1) }),
  };
}

async function onServer() {
  const png = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  const started = performance.now();
  const answer = await postForm("/api/digits/predict", { file: new File([png], "digit.png") });
  const roundTrip = performance.now() - started;
  const bytes = Uint8Array.from(atob(answer.values), (c) => c.charCodeAt(0));
  const classNames = [];
  for (const entry of answer.top) classNames[entry.index] = entry.class;
  return {
    digit: Uint8Array.from(answer.digit.flat()),
    values: new Float32Array(bytes.buffer),
    classNames,
    layers: answer.layers,
    timing: msg("draw.run_server", {
      ms: answer.time_ms.toFixed(1),
      round_trip: Math.round(roundTrip),
    }),
  };
}

// ---- what the network says --------------------------------------------------------------

function showPicture(digit) {
  const context = picture.getContext("2d");
  const image = context.createImageData(MNIST_SIZE, MNIST_SIZE);
  digit.forEach((value, i) => {
    image.data.set([value, value, value, 255], i * 4);
  });
  context.putImageData(image, 0, 0);
}

function show(item, probability, best) {
  item.classList.toggle("best", best);
  item.querySelector(".fill").style.width = `${Math.max(0, Math.min(1, probability)) * 100}%`;
  item.querySelector(".pct").textContent = `${(probability * 100).toFixed(1)}%`;
}

function showResult({ digit, values, classNames, layers: segments, timing }) {
  if (classNames.join("\n") !== state.classNames.join("\n")) buildBars(classNames);
  showPicture(digit);
  const last = segments[segments.length - 1];
  const probabilities = values.subarray(last.offset, last.offset + last.size);
  let best = 0;
  probabilities.forEach((p, i) => {
    if (p > probabilities[best]) best = i;
  });
  Array.from($("draw-digits").children).forEach((item, i) => {
    show(item, probabilities[i], i === best);
  });
  main.dataset.digit = state.classNames[best];
  layers.show(segments, values);
  say($("draw-timing"), timing);
}

function buildBars(classNames) {
  state.classNames = classNames;
  $("draw-digits").replaceChildren(
    ...classNames.map((name) => {
      const item = document.createElement("li");
      item.dataset.digit = name;
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = name;
      const bar = document.createElement("div");
      bar.className = "bar";
      const fill = document.createElement("div");
      fill.className = "fill";
      bar.append(fill);
      const value = document.createElement("span");
      value.className = "pct";
      item.append(label, bar, value);
      return item;
    }),
  );
}

// ---- start ------------------------------------------------------------------------------

async function start() {
  startMenu();
  startCanvas();
  await startI18n();
  try {
    const [demo, runtime] = await Promise.all([getJSON("/api/digits"), classifier.status()]);
    state.demo = demo;
    if (!demo.model) {
      $("draw-missing").hidden = false;
      say($("draw-command"), demo.command);
      main.dataset.state = "missing";
      return;
    }
    say($("draw-model"), msg("draw.model", { model: demo.model }));
    if (!runtime.available) {
      $("draw-server").checked = true;
      $("draw-browser").disabled = true;
      say($("draw-note"), msg("draw.no_browser", { reason: runtime.message }));
    }
    for (const radio of [$("draw-browser"), $("draw-server")]) {
      radio.addEventListener("change", () => {
        if (state.inked) drawn();
      });
    }
    main.dataset.state = "ready";
    if (state.inked) drawn(); // drawn before the page was ready
  } catch (error) {
    showError(error);
    main.dataset.state = "failed";
  }
}

start();
