// The AC-GAN demo (Keras.js's "MNIST AC-GAN"): choose a digit, press "new noise", and the
// server's generator draws that digit from the noise. The noise is 100 numbers drawn
// uniformly from -1 to 1 here in the page, shown as a 10 x 10 grid (black -1, white 1),
// and sent with the class to POST /api/acgan/generate (imgrec.web.routes.acgan). The
// generator is found by the server among its --models files; without one, the page shows
// the command that makes it. Every text shown comes from ../i18n.js.

import { ApiError, getJSON } from "../api.js";
import { msg, say, startI18n } from "../i18n.js";
import { startMenu } from "../menu.js";

const $ = (id) => document.getElementById(id);

const main = $("main");
const digitsBox = $("digits");
const newNoise = $("new-noise");
const noiseCanvas = $("noise");
const digitImage = $("digit");
const digitCaption = $("digit-caption");
const modelNote = $("model-note");
const errorBox = $("error");

let noise = [];
let digit = 0;
let model = null;
// Answers to an older choice must not overwrite a newer one.
let generation = 0;

function drawNoise(latent) {
  noise = Array.from({ length: latent }, () => Math.random() * 2 - 1);
  const side = Math.ceil(Math.sqrt(latent));
  const context = noiseCanvas.getContext("2d");
  const cell = noiseCanvas.width / side;
  context.fillStyle = "#000";
  context.fillRect(0, 0, noiseCanvas.width, noiseCanvas.height);
  noise.forEach((value, i) => {
    const grey = Math.round(((value + 1) / 2) * 255);
    context.fillStyle = `rgb(${grey}, ${grey}, ${grey})`;
    context.fillRect((i % side) * cell, Math.floor(i / side) * cell, cell, cell);
  });
  noiseCanvas.dataset.values = String(latent);
}

async function postJSON(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  let answer;
  try {
    answer = await response.json();
  } catch {
    throw new ApiError(`${response.status} ${response.statusText}`, response.status);
  }
  if (!response.ok) throw new ApiError(answer.error || String(response.status), response.status);
  return answer;
}

async function generate() {
  const mine = ++generation;
  main.dataset.acgan = "busy";
  errorBox.hidden = true;
  try {
    const started = performance.now();
    const answer = await postJSON("/api/acgan/generate", { class: digit, noise });
    if (mine !== generation) return;
    digitImage.src = answer.image;
    digitImage.dataset.class = String(answer.class);
    digitImage.hidden = false;
    const ms = Math.round(performance.now() - started);
    say(digitCaption, msg("acgan.digit_caption", { digit: answer.class_name, ms }));
    main.dataset.acgan = "done";
  } catch (error) {
    if (mine !== generation) return;
    say(errorBox, error.message);
    errorBox.hidden = false;
    main.dataset.acgan = "error";
  }
}

function chooseDigit(chosen) {
  digit = chosen;
  for (const button of digitsBox.querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(Number(button.dataset.digit) === chosen));
  }
  generate();
}

function showMissing(command) {
  $("missing").hidden = false;
  $("controls").hidden = true;
  say($("command"), command);
  main.dataset.acgan = "missing";
}

async function start() {
  await startI18n();
  startMenu();
  let info;
  try {
    info = await getJSON("/api/acgan");
  } catch (error) {
    say(errorBox, error.message);
    errorBox.hidden = false;
    main.dataset.acgan = "error";
    return;
  }
  if (info.model === null) {
    showMissing(info.command);
    return;
  }
  model = info.model;
  say(modelNote, msg("acgan.model", { model }));
  info.classes.forEach((name, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.digit = String(index);
    say(button, name);
    button.addEventListener("click", () => chooseDigit(index));
    digitsBox.append(button);
  });
  newNoise.disabled = false;
  newNoise.addEventListener("click", () => {
    drawNoise(info.latent);
    generate();
  });
  drawNoise(info.latent);
  chooseDigit(0);
}

start();
