// The Teach API, as the page calls it: one function per route, each answering the server's
// JSON (shapes: TEACH_API.md, written with the server on the teachapi branch). Everything
// the page knows about those routes is here.

import { ApiError, getJSON } from "../api.js";

const enc = encodeURIComponent;
const projectPath = (id) => `/api/projects/${enc(id)}`;
const classPath = (id, name) => `${projectPath(id)}/classes/${enc(name)}`;

async function answer(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // no JSON: say what HTTP said
  }
  if (!response.ok) {
    const reason = body?.error || `${response.status} ${response.statusText}`;
    throw new ApiError(reason, response.status);
  }
  return body;
}

// A JSON request (`body` sent as JSON when given).
async function send(method, path, body) {
  const init = { method };
  if (body !== undefined) {
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(body);
  }
  return answer(await fetch(path, init));
}

// {projects: [summary], limits, backbones}
export const listProjects = () => getJSON("/api/projects");
// imageSize: the side the backbone reads the samples at (96 to 224).
export const createProject = (name, imageSize) =>
  send("POST", "/api/projects", { name, image_size: imageSize });
export const getProject = (id) => getJSON(projectPath(id));

export const addClass = (id, name) => send("POST", `${projectPath(id)}/classes`, { name });
export const renameClass = (id, old, name) => send("PATCH", classPath(id, old), { name });
export const deleteClass = (id, name) => send("DELETE", classPath(id, name));

// [Sample], oldest first.
export async function classSamples(id, name) {
  return (await getJSON(`${classPath(id, name)}/samples`)).samples;
}

// Add files or blobs (webcam frames, named here) to a class: {added: [Sample], project}.
export async function addSamples(id, name, blobs) {
  const form = new FormData();
  const stamp = Date.now();
  blobs.forEach((blob, i) => form.append("file", blob, blob.name || `webcam-${stamp}-${i}.jpg`));
  return answer(await fetch(`${classPath(id, name)}/samples`, { method: "POST", body: form }));
}

export const deleteSample = (id, sample) =>
  send("DELETE", `${projectPath(id)}/samples/${enc(sample)}`);

export const startTraining = (id, options) => send("POST", `${projectPath(id)}/train`, options);
export const cancelTraining = (id) => send("POST", `${projectPath(id)}/train/cancel`);
export const eventsUrl = (id) => `${projectPath(id)}/events`;

// Classify one photo with the project's model: {classes, probabilities, top, cam}.
export async function predict(id, photo, { cam = true } = {}) {
  const form = new FormData();
  form.append("file", photo, photo.name || "webcam.jpg");
  form.append("cam", String(cam));
  return answer(await fetch(`${projectPath(id)}/predict`, { method: "POST", body: form }));
}

export const colormaps = () => getJSON("/api/colormaps");
