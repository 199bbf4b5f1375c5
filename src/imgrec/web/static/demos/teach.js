// The Teach page (issue 15): make a classifier of your own from the page, Teachable-Machine
// style. 1. a project (new, or one from the list); 2. its classes and their samples (files,
// a dropped folder, a paste, or the webcam: HOLD a class's button to record a burst);
// 3. training on the server, in the background, its curves streamed live (server-sent
// events); closing the page does not stop it, and the project's id in the URL (#p=ID, and
// in localStorage) brings the page back to it; 4. how good it is on the held-out samples;
// 5. a live preview on the webcam or a photo, with the class activation map; 6. downloads.
// The routes are in teach_api.js; the views in teach_samples.js, teach_chart.js,
// teach_results.js; the webcam in teach_camera.js.
//
// Where the page stands, for tests and scripts: main#teach's data-state (starting, empty,
// open) and data-run (none, or the run's state: queued, features, training, done, failed,
// cancelled, interrupted); #preview-panel's data-preview (idle, live, running, done,
// failed); #upload-status's data-pending (samples not yet stored).

import { CamView } from "../cam.js";
import { msg, PageError, say, startI18n } from "../i18n.js";
import { startMenu } from "../menu.js";
import * as api from "./teach_api.js";
import { Camera } from "./teach_camera.js";
import { CurvesChart } from "./teach_chart.js";
import { renderEvaluation, renderTop } from "./teach_results.js";
import { ClassList, droppedClasses } from "./teach_samples.js";

const $ = (id) => document.getElementById(id);
const STORAGE_KEY = "imgrec-teach-project";
// How long the live preview waits between an answer and the next frame.
const PREVIEW_PAUSE_MS = 100;
// Samples sent to the server in one request (a burst's frames queue up meanwhile).
const UPLOAD_BATCH = 8;
const ACTIVE = new Set(["queued", "features", "training"]);

const main = $("teach");
const camera = new Camera($("camera"));
const chart = new CurvesChart($("curves"));
const cam = new CamView({
  canvas: $("preview-cam"),
  colormapSelect: $("colormap"),
  opacityInput: $("opacity"),
  opacityOutput: $("opacity-value"),
});
const classes = new ClassList($("class-list"), camera, {
  onAdd: queueSamples,
  onRename: renameClass,
  onDelete: deleteClass,
  onDeleteSample: deleteSample,
  onError: showError,
});

let project = null; // the open project, as the server last described it
const samples = new Map(); // class name -> [Sample] of the open project, oldest first
let events = null; // the EventSource of the run being followed
let previewing = false;

// ---- errors ---------------------------------------------------------------------------------

function showError(error) {
  const box = $("error");
  say(box, error.text ?? error.message);
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  say($("error"), "");
}

// Run `work`, showing its failure: its result, or undefined when it failed.
async function attempt(work) {
  try {
    clearError();
    return await work();
  } catch (error) {
    showError(error);
    return undefined;
  }
}

// ---- projects -------------------------------------------------------------------------------

function projectFromUrl() {
  const match = /(?:^#|&)p=([^&]+)/.exec(window.location.hash);
  if (match) return decodeURIComponent(match[1]);
  try {
    return localStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

function remember(id) {
  const hash = `#p=${encodeURIComponent(id)}`;
  if (window.location.hash !== hash) history.replaceState(null, "", hash);
  try {
    localStorage.setItem(STORAGE_KEY, id);
  } catch {
    // storage refused: the URL still holds the project
  }
}

function projectButton(entry) {
  const item = document.createElement("li");
  const open = document.createElement("button");
  open.type = "button";
  open.dataset.project = entry.id;
  open.setAttribute("aria-current", String(entry.id === project?.id));
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = entry.name;
  const counts = document.createElement("span");
  counts.className = "note";
  say(counts, msg("teach.project_counts", { classes: entry.classes, samples: entry.samples }));
  open.append(name, counts);
  open.addEventListener("click", () => attempt(() => openProject(entry.id)));
  item.append(open);
  return item;
}

async function loadProjectList() {
  const { projects } = await api.listProjects();
  $("projects").replaceChildren(...projects.map(projectButton));
  $("no-projects").hidden = projects.length > 0;
}

async function openProject(id) {
  const opened = await api.getProject(id);
  if (project?.id !== opened.id) {
    closeEvents();
    stopPreview();
    samples.clear();
    classes.clear();
    clearPreview();
    showOptions(opened.run?.options);
    project = null;
  }
  remember(opened.id);
  await showProject(opened);
  main.dataset.state = "open";
  showRun(opened.run);
  await loadProjectList();
}

// Show `next` (a Project from the server): its name, its classes and their samples (a
// class whose count differs from the samples shown is fetched again), what it can do.
async function showProject(next) {
  project = next;
  const current = $("current-project");
  say(current, msg("teach.current_project", { name: project.name, size: project.image_size }));
  current.dataset.project = project.id;
  const names = new Set(project.classes.map((entry) => entry.name));
  for (const name of samples.keys()) if (!names.has(name)) samples.delete(name);
  const stale = project.classes.filter(
    (entry) => samples.get(entry.name)?.length !== entry.samples,
  );
  const fetched = await Promise.all(
    stale.map((entry) => api.classSamples(project.id, entry.name)),
  );
  stale.forEach((entry, i) => samples.set(entry.name, fetched[i]));
  drawClasses();
  setDownloads();
}

function drawClasses() {
  classes.update(
    project.classes.map((entry) => ({ name: entry.name, samples: samples.get(entry.name) ?? [] })),
  );
  const ready = project.classes.filter((entry) => entry.samples > 0).length >= 2;
  $("train").disabled = !ready || ACTIVE.has(main.dataset.run);
}

async function createProject(event) {
  event.preventDefault();
  const name = $("project-name").value.trim();
  if (!name) return;
  await attempt(async () => {
    const created = await api.createProject(name, Number($("image-size").value));
    $("project-name").value = "";
    await openProject(created.id);
  });
}

// ---- classes and samples ------------------------------------------------------------------

async function addClass(event) {
  event.preventDefault();
  const name = $("class-name").value.trim();
  if (!name || !project) return;
  await attempt(async () => {
    await showProject(await api.addClass(project.id, name));
    $("class-name").value = "";
    classes.select(name);
  });
}

async function renameClass(old, name, undo) {
  const done = await attempt(async () => {
    const next = await api.renameClass(project.id, old, name);
    classes.rename(old, name);
    if (samples.has(old)) {
      samples.set(name, samples.get(old));
      samples.delete(old);
    }
    await showProject(next);
    return true;
  });
  if (!done) undo();
}

async function deleteClass(name) {
  await attempt(async () => showProject(await api.deleteClass(project.id, name)));
}

async function deleteSample(className, sample) {
  await attempt(async () => {
    const next = await api.deleteSample(project.id, sample.id);
    const list = samples.get(className);
    if (list) samples.set(className, list.filter((old) => old.id !== sample.id));
    await showProject(next);
  });
}

// Samples wait here and go up a few at a time, one request after another, so a burst of
// frames never has more than one upload in flight.
const pending = []; // [{className, blob}]
let uploading = false;

function queueSamples(className, blobs) {
  if (!project) return;
  for (const blob of blobs) pending.push({ className, blob });
  showUploads();
  if (!uploading) drainUploads();
}

function showUploads() {
  const status = $("upload-status");
  status.dataset.pending = String(pending.length + (uploading ? 1 : 0));
  const waiting = pending.length > 0 || uploading;
  say(status, waiting ? msg("teach.uploading", { count: pending.length }) : "");
}

async function drainUploads() {
  uploading = true;
  const id = project.id;
  while (pending.length) {
    const { className } = pending[0];
    const batch = [];
    while (batch.length < UPLOAD_BATCH && pending[0]?.className === className) {
      batch.push(pending.shift().blob);
    }
    showUploads();
    try {
      const { added, project: next } = await api.addSamples(id, className, batch);
      if (project?.id !== id) continue;
      samples.set(className, [...(samples.get(className) ?? []), ...added]);
      await showProject(next);
    } catch (error) {
      showError(error);
    }
  }
  uploading = false;
  showUploads();
}

// Paste an image (a screenshot, a copied photo) into the current class.
function paste(event) {
  if (!project || !classes.current) return;
  if (event.target.closest?.("input, textarea")) return;
  const images = Array.from(event.clipboardData?.files ?? []).filter((file) =>
    file.type.startsWith("image/"),
  );
  if (!images.length) return;
  event.preventDefault();
  queueSamples(classes.current, images);
}

// A folder of class folders dropped on the list (not on a card): a class per subfolder,
// made by its first upload.
function listenForFolders(panel) {
  for (const type of ["dragenter", "dragover"]) {
    panel.addEventListener(type, (event) => {
      if (!project) return;
      event.preventDefault();
      panel.classList.add("over");
    });
  }
  panel.addEventListener("dragleave", (event) => {
    if (!panel.contains(event.relatedTarget)) panel.classList.remove("over");
  });
  panel.addEventListener("drop", async (event) => {
    panel.classList.remove("over");
    if (!project) return;
    event.preventDefault();
    const found = await attempt(() => droppedClasses(event.dataTransfer, classes.current));
    for (const [name, files] of found ?? []) queueSamples(name, files);
  });
}

// ---- the camera -----------------------------------------------------------------------------

async function toggleCamera() {
  if (camera.on) {
    stopPreview();
    camera.stop();
  } else {
    await attempt(async () => {
      try {
        await camera.start();
      } catch (error) {
        throw new PageError("teach.camera_failed", { reason: error.message || error.name });
      }
    });
  }
  const button = $("camera-toggle");
  say(button, camera.on ? msg("teach.camera_stop") : msg("teach.camera_start"));
  button.setAttribute("aria-pressed", String(camera.on));
  $("camera-panel").dataset.camera = camera.on ? "on" : "off";
  classes.setCamera(camera.on);
}

// ---- training -------------------------------------------------------------------------------

// The form shows the options of the project's last run (a page opened again, or another
// project) until they are changed.
function showOptions(options) {
  if (!options) return;
  if (options.backbone) $("backbone").value = options.backbone;
  if (options.epochs) $("epochs").value = String(options.epochs);
  if (options.batch_size) $("batch-size").value = String(options.batch_size);
  if (options.learning_rate) $("learning-rate").value = String(options.learning_rate);
  if (options.augment !== undefined) $("augment").checked = Boolean(options.augment);
}

function trainingOptions() {
  return {
    backbone: $("backbone").value,
    epochs: Number($("epochs").value),
    batch_size: Number($("batch-size").value),
    learning_rate: Number($("learning-rate").value),
    augment: $("augment").checked,
  };
}

async function train(options) {
  if (!project) return;
  await attempt(async () => {
    const run = await api.startTraining(project.id, options);
    project.run = run;
    showRun(run);
  });
}

function closeEvents() {
  events?.close();
  events = null;
}

// Show a run (or null: none yet), and follow it while it is active.
function showRun(run) {
  const active = ACTIVE.has(run?.state);
  main.dataset.run = run?.state ?? "none";
  $("cancel").disabled = !active;
  $("resume").hidden = !run?.resumable || active;
  chart.reset(run?.epochs ?? Number($("epochs").value), run?.history ?? []);
  showProgress(run);
  if (run?.metrics) showEvaluation(run.metrics);
  else if (!active) clearEvaluation();
  if (active) followRun();
  else closeEvents();
  if (project) drawClasses();
}

// What the status line says in each state of a run.
const STATE_MESSAGES = {
  queued: (params) => msg("teach.run_queued", params),
  features: (params) => msg("teach.run_features", params),
  training: (params) => msg("teach.run_training", params),
  done: (params) => msg("teach.run_done", params),
  failed: (params) => msg("teach.run_failed", params),
  cancelled: (params) => msg("teach.run_cancelled", params),
  interrupted: (params) => msg("teach.run_interrupted", params),
};

function showProgress(run) {
  const bar = $("progress");
  const status = $("train-status");
  if (!run) {
    bar.value = 0;
    say(status, "");
    return;
  }
  const { stage, done = 0, total = 0 } = run.progress ?? {};
  if (run.state === "done") bar.value = 1;
  else if (stage === "features" && total) bar.value = done / total;
  else bar.value = (run.epoch ?? 0) / (run.epochs || 1);
  const last = run.history?.at(-1);
  const params = {
    backbone: run.options?.backbone ?? "",
    epoch: run.epoch ?? 0,
    epochs: run.epochs,
    done,
    total,
    loss: last ? last.loss.toFixed(3) : "-",
    accuracy: last ? `${(100 * last.accuracy).toFixed(1)}%` : "-",
    seconds: (run.seconds ?? 0).toFixed(1),
    error: run.error ?? "",
  };
  // Features all cached (total 0) is no step of its own: the run is about to train.
  const state = run.state === "features" && !total ? "queued" : run.state;
  say(status, STATE_MESSAGES[state]?.(params) ?? "");
}

// Follow the project's run by server-sent events: "run" on each change (its whole state),
// "epoch" after each epoch, "end" when it is over (the server then closes the stream, which
// is closed here too: an EventSource would otherwise connect again).
function followRun() {
  if (events || !project) return;
  const id = project.id;
  events = new EventSource(api.eventsUrl(id));
  const onRun = (event) => {
    if (project?.id !== id) return;
    const run = JSON.parse(event.data);
    project.run = run;
    if (ACTIVE.has(run.state)) {
      main.dataset.run = run.state;
      chart.reset(run.epochs, run.history);
      showProgress(run);
    } else {
      showRun(run);
      attempt(async () => showProject(await api.getProject(id)));
    }
  };
  events.addEventListener("run", onRun);
  events.addEventListener("end", onRun);
  events.addEventListener("epoch", (event) => {
    if (project?.id === id) chart.add(JSON.parse(event.data));
  });
  events.addEventListener("error", () => {
    // The stream broke (the server went away) or ended: ask where the run stands.
    if (events?.readyState !== EventSource.CLOSED) return;
    closeEvents();
    attempt(async () => {
      const next = await api.getProject(id);
      if (project?.id !== id) return;
      await showProject(next);
      showRun(next.run);
    });
  });
}

// ---- evaluation and the preview -------------------------------------------------------------

function clearEvaluation() {
  $("evaluation").hidden = true;
  $("evaluate-note").hidden = false;
}

function showEvaluation(metrics) {
  renderEvaluation(
    {
      overall: $("overall"),
      perClass: $("per-class"),
      confusion: $("confusion"),
      mistakes: $("mistakes"),
      noMistakes: $("no-mistakes"),
    },
    metrics,
  );
  $("evaluation").hidden = false;
  $("evaluate-note").hidden = true;
}

function clearPreview() {
  $("preview-top").replaceChildren();
  say($("preview-class"), "");
  delete $("preview-class").dataset.class;
  say($("preview-cam-caption"), "");
  cam.clear();
}

async function showPrediction(photo) {
  const id = project.id;
  const answer = await api.predict(id, photo, { cam: $("show-cam").checked });
  if (project?.id !== id) return;
  const top = answer.classes
    .map((name, i) => ({ class: name, probability: answer.probabilities[i] }))
    .sort((a, b) => b.probability - a.probability);
  renderTop($("preview-top"), top);
  const line = $("preview-class");
  line.dataset.class = answer.top.class;
  const percent = (100 * answer.top.probability).toFixed(1);
  say(line, msg("teach.preview_answer", { name: answer.top.class, percent }));
  if (!answer.cam) {
    cam.clear();
    say($("preview-cam-caption"), "");
    return;
  }
  await cam.show(answer.cam);
  say(
    $("preview-cam-caption"),
    msg("cam.caption", {
      method: answer.cam.method,
      class: answer.cam.class_name,
      percent: (100 * answer.cam.probability).toFixed(1),
      layer: answer.cam.layer,
    }),
  );
}

async function previewPhoto() {
  const file = $("preview-file").files[0];
  $("preview-file").value = "";
  if (!file || !project) return;
  stopPreview();
  const panel = $("preview-panel");
  panel.dataset.preview = "running";
  const ok = await attempt(async () => {
    await showPrediction(file);
    return true;
  });
  panel.dataset.preview = ok ? "done" : "failed";
}

function stopPreview() {
  previewing = false;
  $("preview-live").setAttribute("aria-pressed", "false");
  const panel = $("preview-panel");
  if (panel.dataset.preview === "live") panel.dataset.preview = "idle";
}

// Classify webcam frames one after another until the button is pressed again.
async function togglePreview() {
  if (previewing) {
    stopPreview();
    return;
  }
  if (!project) return;
  if (!camera.on) await toggleCamera();
  if (!camera.on) return;
  previewing = true;
  $("preview-live").setAttribute("aria-pressed", "true");
  $("preview-panel").dataset.preview = "live";
  while (previewing && camera.on) {
    const ok = await attempt(async () => {
      await showPrediction(await camera.grab());
      return true;
    });
    if (!ok) {
      stopPreview();
      $("preview-panel").dataset.preview = "failed";
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, PREVIEW_PAUSE_MS));
  }
}

// ---- downloads -------------------------------------------------------------------------------

function setDownloads() {
  const urls = { ...(project?.model?.downloads ?? {}), samples: project?.samples_zip };
  if (!project?.samples) delete urls.samples;
  for (const link of document.querySelectorAll("#export-panel a[data-format]")) {
    const url = urls[link.dataset.format];
    if (url) {
      link.href = url;
      link.removeAttribute("aria-disabled");
    } else {
      link.removeAttribute("href");
      link.setAttribute("aria-disabled", "true");
    }
  }
}

// ---- start --------------------------------------------------------------------------------

async function openFirstProject() {
  const id = projectFromUrl();
  if (!id) {
    main.dataset.state = "empty";
    await loadProjectList();
    return;
  }
  try {
    await openProject(id);
  } catch (error) {
    // A project deleted since, or a stale link: say so, and offer the list.
    main.dataset.state = "empty";
    await loadProjectList();
    throw error;
  }
}

async function start() {
  startMenu();
  $("new-project").addEventListener("submit", createProject);
  $("new-class").addEventListener("submit", addClass);
  $("camera-toggle").addEventListener("click", toggleCamera);
  $("train").addEventListener("click", () => train(trainingOptions()));
  $("resume").addEventListener("click", () => train({ resume: true }));
  $("cancel").addEventListener("click", () =>
    attempt(async () => project && showRun(await api.cancelTraining(project.id))),
  );
  $("preview-live").addEventListener("click", togglePreview);
  $("preview-file").addEventListener("change", previewPhoto);
  document.addEventListener("paste", paste);
  listenForFolders($("classes-panel"));
  window.addEventListener("hashchange", () => {
    const id = projectFromUrl();
    if (id && id !== project?.id) attempt(() => openProject(id));
  });
  await attempt(async () => {
    const [colormaps] = await Promise.all([api.colormaps(), startI18n()]);
    cam.setColormaps(colormaps.colormaps, colormaps.default);
    await openFirstProject();
  });
}

start();
