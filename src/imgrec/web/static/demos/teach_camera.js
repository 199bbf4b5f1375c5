// The webcam, for the Teach page: one stream (getUserMedia) shown in a <video>, from which
// the page grabs square frames as JPEG blobs, to add samples (HOLD a button: a frame every
// 100 ms while it is pressed) or to preview the trained classifier live.

import { PageError } from "../i18n.js";

// The side of the square frames sent to the server: the backbones read 224 x 224.
export const FRAME_SIZE = 224;
// A burst's pace while the button is held.
export const BURST_INTERVAL_MS = 100;

export class Camera {
  constructor(video) {
    this.video = video;
    this.stream = null;
    this.canvas = document.createElement("canvas");
    this.canvas.width = FRAME_SIZE;
    this.canvas.height = FRAME_SIZE;
  }

  get on() {
    return this.stream !== null;
  }

  // Ask for the camera and show it; resolves once frames arrive.
  async start() {
    if (this.stream) return;
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 } },
      audio: false,
    });
    this.stream = stream;
    this.video.srcObject = stream;
    await this.video.play();
    if (!this.video.videoWidth) {
      await new Promise((resolve) => {
        this.video.addEventListener("loadeddata", resolve, { once: true });
      });
    }
  }

  stop() {
    if (!this.stream) return;
    for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
    this.video.srcObject = null;
  }

  // The middle square of the current frame, at FRAME_SIZE, as a JPEG blob.
  grab() {
    const { videoWidth: width, videoHeight: height } = this.video;
    const side = Math.min(width, height);
    const context = this.canvas.getContext("2d");
    context.drawImage(
      this.video,
      (width - side) / 2,
      (height - side) / 2,
      side,
      side,
      0,
      0,
      FRAME_SIZE,
      FRAME_SIZE,
    );
    return new Promise((resolve, reject) => {
      this.canvas.toBlob(
        (blob) => (blob ? resolve(blob) : reject(new PageError("teach.frame_failed"))),
        "image/jpeg",
        0.9,
      );
    });
  }
}

// Make `button` record a burst while it is held: onFrame(blob) for each frame, a frame
// every BURST_INTERVAL_MS from the press to the release (mouse, touch, pen or the space
// bar). onStart/onStop bracket the burst; the button's data-frames counts its frames.
export function holdToRecord(button, camera, { onFrame, onStart = () => {}, onStop = () => {} }) {
  let timer = null;
  let taking = null; // the frame being grabbed, a Promise
  let frames = 0;

  function take() {
    if (taking || !camera.on) return; // a slow encoder skips a beat rather than queueing
    taking = camera
      .grab()
      .then((blob) => {
        frames += 1;
        button.dataset.frames = String(frames);
        return onFrame(blob);
      })
      .catch(() => {}) // a frame lost (the camera stopped meanwhile) is just not added
      .finally(() => {
        taking = null;
      });
  }

  function press(event) {
    if (timer !== null || button.disabled || !camera.on) return;
    event.preventDefault();
    if (event.pointerId !== undefined) button.setPointerCapture?.(event.pointerId);
    button.dataset.recording = "true";
    frames = 0;
    button.dataset.frames = "0";
    onStart();
    take();
    timer = setInterval(take, BURST_INTERVAL_MS);
  }

  // The burst ends once its last frame is handed over: data-recording goes then.
  async function release() {
    if (timer === null) return;
    clearInterval(timer);
    timer = null;
    await taking;
    delete button.dataset.recording;
    onStop();
  }

  button.addEventListener("pointerdown", press);
  for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
    button.addEventListener(type, release);
  }
  button.addEventListener("keydown", (event) => {
    if ((event.key === " " || event.key === "Enter") && !event.repeat) press(event);
  });
  button.addEventListener("keyup", (event) => {
    if (event.key === " " || event.key === "Enter") release();
  });
  button.addEventListener("contextmenu", (event) => event.preventDefault());
}
