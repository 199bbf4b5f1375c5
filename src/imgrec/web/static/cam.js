// The class activation map over the photo, painted in the browser: the server sends the
// photo as the model saw it and the heatmap as grey levels, and this view colours the
// heatmap with the chosen colormap (a 256-colour table from /api/colormaps) and blends
// it over the photo at the chosen opacity. Moving the slider or changing the colormap
// never goes back to the server.

import { PageError } from "./i18n.js";

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new PageError("error.bad_image"));
    image.src = src;
  });
}

export class CamView {
  constructor({ canvas, colormapSelect, opacityInput, opacityOutput }) {
    this.canvas = canvas;
    this.colormapSelect = colormapSelect;
    this.opacityInput = opacityInput;
    this.opacityOutput = opacityOutput;
    this.tables = {};
    this.photo = null;
    this.heat = null; // Uint8ClampedArray of grey levels, one per pixel
    this.colored = document.createElement("canvas");

    colormapSelect.addEventListener("change", () => this.recolor());
    opacityInput.addEventListener("input", () => this.draw());
  }

  setColormaps(tables, defaultName) {
    this.tables = tables;
    this.colormapSelect.replaceChildren(
      ...Object.keys(tables).map((name) => new Option(name, name, false, name === defaultName)),
    );
  }

  get opacity() {
    return Number(this.opacityInput.value) / 100;
  }

  async show(explanation) {
    const [photo, heatmap] = await Promise.all([
      loadImage(explanation.image),
      loadImage(explanation.heatmap),
    ]);
    const { width, height } = photo;
    const scratch = document.createElement("canvas");
    scratch.width = width;
    scratch.height = height;
    const context = scratch.getContext("2d", { willReadFrequently: true });
    context.drawImage(heatmap, 0, 0, width, height);
    const rgba = context.getImageData(0, 0, width, height).data;
    this.heat = new Uint8ClampedArray(width * height);
    for (let i = 0; i < this.heat.length; i += 1) this.heat[i] = rgba[4 * i];
    this.photo = photo;
    this.canvas.width = width;
    this.canvas.height = height;
    this.recolor();
  }

  clear() {
    this.photo = null;
    this.heat = null;
    this.canvas.getContext("2d").clearRect(0, 0, this.canvas.width, this.canvas.height);
  }

  recolor() {
    if (!this.photo) return;
    const table = this.tables[this.colormapSelect.value];
    const { width, height } = this.photo;
    this.colored.width = width;
    this.colored.height = height;
    const context = this.colored.getContext("2d");
    const pixels = context.createImageData(width, height);
    for (let i = 0; i < this.heat.length; i += 1) {
      const [r, g, b] = table[this.heat[i]];
      pixels.data.set([r, g, b, 255], 4 * i);
    }
    context.putImageData(pixels, 0, 0);
    this.draw();
  }

  draw() {
    this.opacityOutput.textContent = `${this.opacityInput.value}%`;
    if (!this.photo) return;
    const context = this.canvas.getContext("2d");
    context.globalAlpha = 1;
    context.drawImage(this.photo, 0, 0);
    context.globalAlpha = this.opacity;
    context.drawImage(this.colored, 0, 0);
    context.globalAlpha = 1;
  }
}
