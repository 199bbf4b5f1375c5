// Classify a photo in the browser with onnxruntime-web: the server hands over the network's
// ONNX export and its preprocessing recipe (/api/models/NAME/onnx.json), and the runtime's
// files (/api/browser says where); the photo's pixels never go to the server, and no
// forward pass runs there.
//
// Preprocessing follows the recipe exactly (resize "stretch", or "short_side" to resize_to
// then the central crop, with Python's rounding; scale, mean, std, BGR; grey by Pillow's
// weights; transparency over white) except for one step: the canvas resamples the photo
// with the browser's high-quality filter, which is close to Pillow's bilinear filter but
// not the same, so probabilities differ slightly from the server's (chelsea through
// MobileNetV2: Egyptian cat 0.7162 here, 0.7139 there), and a photo the network hesitates
// over can change order.

import { getJSON } from "./api.js";
import { msg, PageError } from "./i18n.js";

// Sessions kept ready, across models and backends; each holds the network's weights.
const KEPT_SESSIONS = 2;

// Python's round(): halves go to the even neighbour. Crop offsets like 80.5 must match.
function roundHalfEven(x) {
  const floor = Math.floor(x);
  const rest = x - floor;
  if (rest !== 0.5) return Math.round(x);
  return floor % 2 === 0 ? floor : floor + 1;
}

// The resized size of a height x width photo and the crop's corner in it, as
// imgrec.models.preprocessing.Preprocessing._resize_geometry computes them.
export function resizeGeometry(height, width, recipe) {
  const [outHeight, outWidth] = recipe.size;
  if (recipe.resize !== "short_side") {
    return { width: outWidth, height: outHeight, left: 0, top: 0 };
  }
  const ratio = recipe.resize_to / Math.min(height, width);
  const newWidth = Math.max(outWidth, roundHalfEven(width * ratio));
  const newHeight = Math.max(outHeight, roundHalfEven(height * ratio));
  return {
    width: newWidth,
    height: newHeight,
    left: roundHalfEven((newWidth - outWidth) / 2),
    top: roundHalfEven((newHeight - outHeight) / 2),
  };
}

// The photo as the network's float32 input, N x H x W x C (channels last) with N = 1.
function toInput(bitmap, recipe, channels) {
  const [height, width] = recipe.size;
  const box = resizeGeometry(bitmap.height, bitmap.width, recipe);
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.fillStyle = "#fff"; // imgrec composites transparent pixels over white
  context.fillRect(0, 0, width, height);
  context.imageSmoothingEnabled = true;
  context.imageSmoothingQuality = "high";
  context.drawImage(bitmap, -box.left, -box.top, box.width, box.height);
  const rgba = context.getImageData(0, 0, width, height).data;
  const { scale, mean, std, bgr } = recipe;
  const data = new Float32Array(width * height * channels);
  for (let i = 0, j = 0; i < rgba.length; i += 4) {
    if (channels === 1) {
      // Pillow's RGB to L, in its fixed-point form.
      const grey = (rgba[i] * 19595 + rgba[i + 1] * 38470 + rgba[i + 2] * 7471 + 0x8000) >> 16;
      data[j++] = (grey * scale - mean[0]) / std[0];
    } else {
      for (let c = 0; c < 3; c++) {
        data[j++] = (rgba[i + (bgr ? 2 - c : c)] * scale - mean[c]) / std[c];
      }
    }
  }
  return { data, dims: [1, height, width, channels] };
}

// Why WebGPU cannot run here (a message of i18n.js), or null when it may.
async function webgpuMissing() {
  if (!navigator.gpu) return msg("webgpu.no_navigator_gpu");
  try {
    if (!(await navigator.gpu.requestAdapter())) return msg("webgpu.no_adapter");
  } catch (error) {
    return msg("webgpu.adapter_error", { reason: error.message });
  }
  return null;
}

function topClasses(probabilities, classNames, count) {
  const order = Array.from(probabilities.keys());
  order.sort((a, b) => probabilities[b] - probabilities[a]);
  return order.slice(0, count).map((index, rank) => ({
    rank: rank + 1,
    class: classNames[index],
    index,
    probability: probabilities[index],
  }));
}

export class BrowserClassifier {
  constructor() {
    this.runtime = null; // /api/browser's answer
    this.modules = new Map(); // module URL -> Promise of the ort namespace
    this.sessions = new Map(); // "sha256 backend" -> Promise of {ort, session, loadMs, bytes}
    this.queue = Promise.resolve(); // one forward pass at a time: a session runs one
  }

  // /api/browser's answer: {available, message, version, wasm, webgpu}.
  async status() {
    this.runtime ??= await getJSON("/api/browser");
    return this.runtime;
  }

  // Classify a photo (a Blob: a File, or a fetched sample) with the network called `model`.
  // Returns {model, top, backend, time_ms, fps, preprocess_ms, first: null | {load_ms,
  // bytes, run_ms}, note}: `first` is there when this call created the session, and
  // time_ms is then a second, warm run. `note` says why WebGPU was not used, if asked for
  // (a message of i18n.js), and is "" otherwise.
  async classify(model, photo, { gpu = false, top = 5 } = {}) {
    const runtime = await this.status();
    if (!runtime.available) throw new Error(runtime.message);
    const [description, bitmap] = await Promise.all([
      getJSON(`/api/models/${encodeURIComponent(model)}/onnx.json`),
      createImageBitmap(photo, { imageOrientation: "from-image", colorSpaceConversion: "none" }),
    ]);
    const started = performance.now();
    const input = toInput(bitmap, description.preprocessing, description.input.shape[3]);
    bitmap.close();
    const preprocessMs = performance.now() - started;

    let backend = "wasm";
    let note = "";
    if (gpu) {
      const missing = await webgpuMissing();
      if (missing) note = msg("webgpu.unavailable", { reason: missing });
      else backend = "webgpu";
    }
    let prepared;
    try {
      prepared = await this.session(description, backend);
    } catch (error) {
      if (backend !== "webgpu") throw error;
      note = msg("webgpu.failed", { reason: error.message });
      backend = "wasm";
      prepared = await this.session(description, backend);
    }
    const run = () => this.run(prepared, input);
    let first = null;
    if (!prepared.used) {
      // The first run allocates and compiles: time it apart from the warm run shown.
      prepared.used = true;
      const { ms } = await run();
      first = { load_ms: prepared.loadMs, bytes: prepared.bytes, run_ms: ms };
    }
    const { ms, output } = await run();
    const probabilities = output.length === 1 ? [1 - output[0], output[0]] : Array.from(output);
    return {
      model: description.label,
      top: topClasses(probabilities, description.class_names, top),
      backend,
      time_ms: ms,
      fps: 1000 / ms,
      preprocess_ms: preprocessMs,
      first,
      note,
    };
  }

  run({ ort, session }, input) {
    const work = async () => {
      const tensor = new ort.Tensor("float32", input.data, input.dims);
      const started = performance.now();
      const results = await session.run({ [session.inputNames[0]]: tensor });
      const ms = performance.now() - started;
      return { ms, output: results[session.outputNames[0]].data };
    };
    const result = this.queue.then(work);
    this.queue = result.catch(() => {});
    return result;
  }

  // The session of one export on one backend, created once; the oldest beyond
  // KEPT_SESSIONS is released.
  async session(description, backend) {
    const key = `${description.sha256} ${backend}`;
    if (!this.sessions.has(key)) {
      const creating = this.createSession(description, backend);
      this.sessions.set(key, creating);
      creating.catch(() => this.sessions.delete(key));
      while (this.sessions.size > KEPT_SESSIONS) {
        const [oldest, pending] = this.sessions.entries().next().value;
        this.sessions.delete(oldest);
        pending.then(({ session }) => session.release()).catch(() => {});
      }
    }
    return this.sessions.get(key);
  }

  async createSession(description, backend) {
    const started = performance.now();
    const ort = await this.module(backend === "webgpu" ? this.runtime.webgpu : this.runtime.wasm);
    const response = await fetch(description.onnx);
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try {
        message = (await response.json()).error || message;
      } catch {
        // not JSON: the status says enough
      }
      throw new PageError("error.onnx_fetch", { model: description.model, reason: message });
    }
    const bytes = await response.arrayBuffer();
    const session = await ort.InferenceSession.create(bytes, {
      executionProviders: [backend],
      graphOptimizationLevel: "all",
    });
    return { ort, session, loadMs: performance.now() - started, bytes: bytes.byteLength };
  }

  module(url) {
    if (!this.modules.has(url)) {
      const loading = import(url).then((ort) => {
        // WebAssembly threads need a cross-origin isolated page; elsewhere asking for
        // them only brings a warning.
        ort.env.wasm.numThreads = self.crossOriginIsolated
          ? Math.min(4, navigator.hardwareConcurrency || 1)
          : 1;
        return ort;
      });
      this.modules.set(url, loading);
      loading.catch(() => this.modules.delete(url));
    }
    return this.modules.get(url);
  }
}

const duration = (ms) => (ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${ms.toFixed(1)} ms`);

// What a classify() result took, as a message of i18n.js: the warm forward pass first.
export function describeRun(result) {
  const first = result.first
    ? msg("run.browser_first", {
        load: duration(result.first.load_ms),
        mib: (result.first.bytes / 2 ** 20).toFixed(1),
        first_run: duration(result.first.run_ms),
      })
    : "";
  return msg("run.browser", {
    model: result.model,
    backend: result.backend,
    ms: result.time_ms.toFixed(1),
    fps: result.fps.toFixed(1),
    prepare: result.preprocess_ms.toFixed(1),
    first,
  });
}
