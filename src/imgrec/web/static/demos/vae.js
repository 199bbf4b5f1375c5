// The VAE demo (Keras.js's "convolutional variational autoencoder"): drag a crosshair over
// the 2-D latent plane and see the digit the decoder makes of the point, and what each of
// its layers made on the way. Decoding runs on the server (GET /api/vae/decode: a few
// milliseconds), one request at a time: while one is out, only the latest point waits.
// Two pictures sit beside it: a grid of decodings over the plane (GET /api/vae/grid.png),
// and the held-out images' latent codes scattered by class (kept in the model file).

import { getJSON } from "../api.js";
import { msg, PageError, say, startI18n } from "../i18n.js";
import { startMenu } from "../menu.js";

const $ = (id) => document.getElementById(id);
const GRID_SIZE = 15;
const KEY_STEP = 0.05; // how far an arrow key moves the crosshair
// Ten colours that tell classes apart (matplotlib's tab10), then grey.
const COLOURS = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];
const ACCENT = "#d9480f";
const AXIS = "#b8b8b8";
const FAINT = "#ececec";

const plane = $("plane");
const scatter = $("scatter");
let info = null; // /api/vae's answer
let z = [0, 0];
let inFlight = false;
let waiting = false; // a point arrived while a request was out

function colour(label) {
  return COLOURS[label] ?? "#555";
}

function modelQuery() {
  return `model=${encodeURIComponent(info.model)}`;
}

// ---- the latent plane --------------------------------------------------------------------

// Plane coordinates (x right, y up, each in [-extent, extent]) to canvas pixels, and back.
function toPixel(value, size, extent, flip) {
  const fraction = (value + extent) / (2 * extent);
  return (flip ? 1 - fraction : fraction) * size;
}

function fromPixel(pixel, size, extent, flip) {
  const fraction = Math.min(1, Math.max(0, pixel / size));
  return (flip ? 1 - fraction : fraction) * 2 * extent - extent;
}

function drawAxes(context, size, extent, step) {
  context.lineWidth = 1;
  for (let value = -extent; value <= extent + 1e-9; value += step) {
    const at = Math.round(toPixel(value, size, extent, false)) + 0.5;
    context.strokeStyle = Math.abs(value) < 1e-9 ? AXIS : FAINT;
    context.beginPath();
    context.moveTo(at, 0);
    context.lineTo(at, size);
    context.moveTo(0, at);
    context.lineTo(size, at);
    context.stroke();
  }
}

function drawPlane() {
  const context = plane.getContext("2d");
  const size = plane.width;
  const extent = info.extent;
  context.fillStyle = "#fff";
  context.fillRect(0, 0, size, size);
  drawAxes(context, size, extent, extent / 4);
  const x = toPixel(z[0], size, extent, false);
  const y = toPixel(z[1], size, extent, true);
  context.strokeStyle = ACCENT;
  context.lineWidth = 1.5;
  context.beginPath();
  context.moveTo(x, 0);
  context.lineTo(x, size);
  context.moveTo(0, y);
  context.lineTo(size, y);
  context.stroke();
  context.beginPath();
  context.arc(x, y, 6, 0, 2 * Math.PI);
  context.stroke();
  plane.dataset.z = z.map((v) => v.toFixed(3)).join(",");
  say($("z-value"), msg("vae.z", { x: z[0].toFixed(2), y: z[1].toFixed(2) }));
}

function moveTo(point) {
  const extent = info.extent;
  z = point.map((v) => Math.min(extent, Math.max(-extent, v)));
  drawPlane();
  drawScatter();
  decode();
}

function pointFromEvent(event) {
  const box = plane.getBoundingClientRect();
  const extent = info.extent;
  return [
    fromPixel(event.clientX - box.left, box.width, extent, false),
    fromPixel(event.clientY - box.top, box.height, extent, true),
  ];
}

function listenToPlane() {
  plane.addEventListener("pointerdown", (event) => {
    plane.setPointerCapture(event.pointerId);
    plane.focus(); // the arrow keys move the crosshair from here on
    moveTo(pointFromEvent(event));
    event.preventDefault();
  });
  plane.addEventListener("pointermove", (event) => {
    if (plane.hasPointerCapture(event.pointerId)) moveTo(pointFromEvent(event));
  });
  plane.addEventListener("keydown", (event) => {
    const moves = {
      ArrowLeft: [-KEY_STEP, 0],
      ArrowRight: [KEY_STEP, 0],
      ArrowUp: [0, KEY_STEP],
      ArrowDown: [0, -KEY_STEP],
    };
    const move = moves[event.key];
    if (!move) return;
    event.preventDefault();
    moveTo([z[0] + move[0], z[1] + move[1]]);
  });
}

// ---- decoding ----------------------------------------------------------------------------

async function decode() {
  if (inFlight) {
    waiting = true;
    return;
  }
  inFlight = true;
  try {
    do {
      waiting = false;
      const [x, y] = z;
      const answer = await getJSON(`/api/vae/decode?x=${x}&y=${y}&${modelQuery()}`);
      showDecoding(answer);
    } while (waiting);
    showError(null);
  } catch (error) {
    showError(error);
  } finally {
    inFlight = false;
  }
}

function showDecoding(answer) {
  const image = $("decoded");
  image.src = answer.image;
  image.dataset.z = answer.z.map((v) => v.toFixed(3)).join(",");
  say($("decode-time"), msg("vae.decode_time", { ms: answer.milliseconds.toFixed(1) }));
  const figures = answer.layers.map((layer) => {
    const figure = document.createElement("figure");
    const picture = document.createElement("img");
    picture.src = layer.image;
    say(picture, msg("vae.layer_alt", { name: layer.name }), "alt");
    const caption = document.createElement("figcaption");
    say(caption, msg("vae.layer_caption", {
      name: layer.name,
      type: layer.type,
      shape: layer.shape.join(" × "),
    }));
    figure.append(picture, caption);
    return figure;
  });
  $("decoder-layers").replaceChildren(...figures);
}

// ---- the two pictures --------------------------------------------------------------------

// The scatter's half side: the codes' reach rounded up to a half, never less than the plane.
function scatterExtent(points) {
  let reach = info.extent;
  for (const point of points) reach = Math.max(reach, Math.abs(point[0]), Math.abs(point[1]));
  return Math.ceil(reach * 2) / 2;
}

function drawScatter() {
  const context = scatter.getContext("2d");
  const size = scatter.width;
  context.fillStyle = "#fff";
  context.fillRect(0, 0, size, size);
  const encodings = info.encodings;
  if (!encodings) return;
  const extent = scatterExtent(encodings.points);
  drawAxes(context, size, extent, extent >= 2 ? 1 : 0.5);
  encodings.points.forEach((point, index) => {
    context.fillStyle = colour(encodings.labels[index]);
    context.globalAlpha = 0.7;
    context.beginPath();
    const x = toPixel(point[0], size, extent, false);
    const y = toPixel(point[1], size, extent, true);
    context.arc(x, y, 2.2, 0, 2 * Math.PI);
    context.fill();
  });
  context.globalAlpha = 1;
  // The page's plane, and where its crosshair is.
  const low = toPixel(-info.extent, size, extent, false);
  const high = toPixel(info.extent, size, extent, false);
  context.setLineDash([4, 3]);
  context.strokeStyle = "#333";
  context.strokeRect(low, low, high - low, high - low);
  context.setLineDash([]);
  context.strokeStyle = ACCENT;
  context.lineWidth = 2;
  context.beginPath();
  context.arc(toPixel(z[0], size, extent, false), toPixel(z[1], size, extent, true), 5, 0, 7);
  context.stroke();
  context.lineWidth = 1;
  scatter.dataset.points = String(encodings.points.length);
  scatter.dataset.extent = String(extent);
}

function showLegend() {
  const items = info.class_names.map((name, index) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colour(index);
    const label = document.createElement("span");
    say(label, name);
    item.append(swatch, label);
    return item;
  });
  $("legend").replaceChildren(...items);
}

function showPictures() {
  const extent = info.extent;
  say($("grid-help"), msg("vae.grid_help", { size: GRID_SIZE, extent }));
  $("grid").src = `/api/vae/grid.png?size=${GRID_SIZE}&${modelQuery()}`;
  const encodings = info.encodings;
  say($("scatter-help"), encodings
    ? msg("vae.scatter_help", { count: encodings.points.length, split: encodings.split })
    : msg("vae.scatter_missing"));
  showLegend();
  drawScatter();
}

// ---- the page ----------------------------------------------------------------------------

function showError(error) {
  const box = $("error");
  box.hidden = !error;
  if (error) say(box, error.text ?? error.message);
}

function showModels() {
  const choice = $("vae-model");
  choice.replaceChildren(...info.models.map((name) => new Option(name, name, false, name === info.model)));
  $("model-choice").hidden = info.models.length < 2;
  say($("trained-on"), msg("vae.trained_on", { model: info.model, dataset: info.dataset ?? "?" }));
}

async function load(model = null) {
  const query = model ? `?model=${encodeURIComponent(model)}` : "";
  info = await getJSON(`/api/vae${query}`);
  if (!info.model) {
    say($("command"), info.command);
    $("missing").hidden = false;
    $("vae").dataset.state = "missing";
    return;
  }
  if (info.latent_dim !== 2) throw new PageError("vae.not_2d", { dim: info.latent_dim });
  showModels();
  showPictures();
  z = [0, 0];
  drawPlane();
  await decode();
  $("vae").dataset.state = "ready";
}

async function start() {
  startMenu();
  try {
    await startI18n();
    listenToPlane();
    $("vae-model").addEventListener("change", (event) => {
      load(event.target.value).catch(showError);
    });
    await load();
  } catch (error) {
    showError(error);
  }
}

start();
