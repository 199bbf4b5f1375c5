// The super-resolution demo (Keras.js's Image Super-Resolution): pick a network and a
// photo; the server makes the photo twice as large with the network (over overlapping
// tiles) and with bilinear interpolation, and a slider moves the line between the two.
// The networks are the models folder's files whose metadata names sr-cnn or sr-resnet
// (GET /api/super-resolution/models); without one the page shows the command that makes it.

import { getJSON, postForm } from "../api.js";
import { msg, say, startI18n } from "../i18n.js";
import { startMenu } from "../menu.js";
import { ImagePicker } from "../source.js";

const $ = (id) => document.getElementById(id);

const main = $("main");
const modelSelect = $("model");
const statusLine = $("status");
const errorBox = $("error");
const compare = $("compare");
const slider = $("slider");

// Answers to an older choice must not overwrite a newer one.
let generation = 0;

const picker = new ImagePicker({
  samples: $("samples"),
  fileInput: $("file"),
  dropZone: $("drop"),
  urlForm: $("url-form"),
  urlInput: $("url"),
  onChange: upscale,
  onError: showError,
});

function showError(error) {
  say(errorBox, error.text ?? error.message);
  errorBox.hidden = false;
}

function clearError() {
  errorBox.hidden = true;
  say(errorBox, "");
}

// Where the line between bilinear (left) and the network (right) stands, 0 to 100.
function setSplit(percent) {
  const value = Math.round(Math.min(100, Math.max(0, Number(percent))));
  slider.value = String(value);
  compare.style.setProperty("--split", `${value}%`);
  compare.dataset.split = String(value);
}

slider.addEventListener("input", () => setSplit(slider.value));

// Dragging on the pictures moves the line too.
function splitAt(event) {
  const box = compare.getBoundingClientRect();
  if (box.width > 0) setSplit(((event.clientX - box.left) / box.width) * 100);
}
compare.addEventListener("pointerdown", (event) => {
  compare.setPointerCapture(event.pointerId);
  splitAt(event);
});
compare.addEventListener("pointermove", (event) => {
  if (compare.hasPointerCapture(event.pointerId)) splitAt(event);
});

async function upscale() {
  const image = picker.fields();
  const model = modelSelect.value;
  if (!image || !model) return;
  const mine = ++generation;
  clearError();
  main.dataset.state = "working";
  say(statusLine, msg("sr.working", { model }));
  try {
    const result = await postForm("/api/super-resolution", { model, ...image });
    if (mine !== generation) return;
    await show(result);
    if (mine !== generation) return;
    main.dataset.state = "done";
  } catch (error) {
    if (mine !== generation) return;
    main.dataset.state = "error";
    say(statusLine, "");
    showError(error);
  }
}

function loaded(img, src) {
  return new Promise((resolve, reject) => {
    img.onload = resolve;
    img.onerror = reject;
    img.src = src;
  });
}

async function show(result) {
  await Promise.all([loaded($("before"), result.bilinear), loaded($("after"), result.network)]);
  say($("after-tag"), result.model);
  compare.hidden = false;
  slider.disabled = false;
  const [width, height] = result.size;
  const [bigWidth, bigHeight] = result.upscaled;
  const ms = (result.seconds * 1000).toFixed(0);
  say(statusLine, msg("sr.done", { model: result.model, arch: result.arch, ms }));
  const sizes = { width, height, big_width: bigWidth, big_height: bigHeight };
  if (result.shrunk_from) {
    const [fromWidth, fromHeight] = result.shrunk_from;
    say($("details"), msg("sr.shrunk", { ...sizes, from_width: fromWidth, from_height: fromHeight }));
  } else {
    say($("details"), msg("sr.sizes", sizes));
  }
}

function showMissing(command) {
  $("missing").hidden = false;
  say($("command"), command);
  main.dataset.state = "missing";
}

async function start() {
  startMenu();
  await startI18n();
  setSplit(slider.value);
  const [{ models, command }, { upload_limit: uploadLimit }] = await Promise.all([
    getJSON("/api/super-resolution/models"),
    getJSON("/api/models"),
  ]);
  picker.uploadLimit = uploadLimit;
  await picker.loadSamples();
  if (!models.length) {
    showMissing(command);
    return;
  }
  modelSelect.replaceChildren(
    ...models.map(({ name, arch }) => {
      const option = document.createElement("option");
      option.value = name;
      say(option, msg("sr.option", { name, arch }));
      return option;
    }),
  );
  modelSelect.disabled = false;
  modelSelect.addEventListener("change", upscale);
  main.dataset.state = "ready";
  say(statusLine, msg("sr.pick"));
}

start().catch((error) => {
  main.dataset.state = "error";
  showError(error);
});
