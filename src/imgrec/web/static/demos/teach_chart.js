// The training curves, drawn on a canvas as they stream in: loss on the left, accuracy on
// the right, the training set's curve solid and the held-out set's dashed. The legend and
// the titles are HTML (from the i18n tables); the canvas draws only lines and numbers.

const COLORS = { train: "#d0451b", val: "#2563a8" };
const PAD = { left: 36, right: 8, top: 8, bottom: 20 };

export class CurvesChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.history = []; // [{epoch, loss, accuracy, val_loss, val_accuracy}], epoch from 1
    this.epochs = 1;
  }

  // Start again for a run of `epochs` epochs, with what it has logged so far.
  reset(epochs, history = []) {
    this.epochs = Math.max(1, epochs || 1);
    this.history = [...history];
    this.draw();
  }

  add(point) {
    const at = this.history.findIndex((old) => old.epoch === point.epoch);
    if (at >= 0) this.history[at] = point;
    else this.history.push(point);
    this.history.sort((a, b) => a.epoch - b.epoch);
    this.draw();
  }

  draw() {
    const { canvas } = this;
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, canvas.width, canvas.height);
    const half = canvas.width / 2;
    const losses = this.history.flatMap((p) => [p.loss, p.val_loss]).filter(Number.isFinite);
    const top = Math.max(0.1, ...losses) * 1.1;
    this.panel(context, 0, half, [0, top], ["loss", "val_loss"]);
    this.panel(context, half, half, [0, 1], ["accuracy", "val_accuracy"]);
  }

  panel(context, left, width, [low, high], [trainKey, valKey]) {
    const height = this.canvas.height;
    const x0 = left + PAD.left;
    const x1 = left + width - PAD.right;
    const y0 = height - PAD.bottom;
    const y1 = PAD.top;
    const x = (epoch) => x0 + ((x1 - x0) * epoch) / this.epochs;
    const y = (value) => y0 - ((y0 - y1) * (value - low)) / (high - low || 1);

    context.strokeStyle = "#d9dde5";
    context.fillStyle = "#5d6677";
    context.font = "10px system-ui, sans-serif";
    context.lineWidth = 1;
    context.setLineDash([]);
    context.textAlign = "right";
    context.textBaseline = "middle";
    for (let i = 0; i <= 4; i += 1) {
      const value = low + ((high - low) * i) / 4;
      context.beginPath();
      context.moveTo(x0, y(value));
      context.lineTo(x1, y(value));
      context.stroke();
      context.fillText(value.toFixed(2), x0 - 4, y(value));
    }
    context.textAlign = "center";
    context.textBaseline = "top";
    const step = Math.max(1, Math.ceil(this.epochs / 8));
    for (let epoch = 0; epoch <= this.epochs; epoch += step) {
      context.fillText(String(epoch), x(epoch), y0 + 4);
    }

    for (const [key, color, dash] of [
      [trainKey, COLORS.train, []],
      [valKey, COLORS.val, [5, 3]],
    ]) {
      const points = this.history.filter((p) => Number.isFinite(p[key]));
      if (!points.length) continue;
      context.strokeStyle = color;
      context.fillStyle = color;
      context.lineWidth = 2;
      context.setLineDash(dash);
      context.beginPath();
      points.forEach((p, i) => {
        if (i === 0) context.moveTo(x(p.epoch), y(p[key]));
        else context.lineTo(x(p.epoch), y(p[key]));
      });
      context.stroke();
      for (const p of points) {
        context.beginPath();
        context.arc(x(p.epoch), y(p[key]), 2.5, 0, 2 * Math.PI);
        context.fill();
      }
    }
    context.setLineDash([]);
  }
}
