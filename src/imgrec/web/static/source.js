// Choosing the photo: a sample, a file (picked or dropped), or a URL the server fetches.
// The picker keeps the current choice and turns it into the API's form fields, or into
// the photo's bytes for classifying in the browser.

import { getJSON } from "./api.js";
import { PageError } from "./i18n.js";

export class ImagePicker {
  constructor({ samples, fileInput, dropZone, urlForm, urlInput, onChange, onError }) {
    this.samplesEl = samples;
    this.onChange = onChange;
    this.onError = onError;
    this.uploadLimit = Infinity;
    this.current = null; // {kind: "sample" | "file" | "url", value, label}

    fileInput.addEventListener("change", () => {
      if (fileInput.files.length) this.chooseFile(fileInput.files[0]);
    });
    for (const type of ["dragenter", "dragover"]) {
      dropZone.addEventListener(type, (event) => {
        event.preventDefault();
        dropZone.classList.add("over");
      });
    }
    dropZone.addEventListener("dragleave", () => dropZone.classList.remove("over"));
    dropZone.addEventListener("drop", (event) => {
      event.preventDefault();
      dropZone.classList.remove("over");
      if (event.dataTransfer.files.length) this.chooseFile(event.dataTransfer.files[0]);
    });
    urlForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const url = urlInput.value.trim();
      if (url) this.choose({ kind: "url", value: url, label: url });
    });
  }

  async loadSamples() {
    const { samples } = await getJSON("/api/samples");
    this.samplesEl.replaceChildren(
      ...samples.map((sample) => {
        const button = document.createElement("button");
        button.type = "button";
        button.dataset.sample = sample.name;
        button.setAttribute("aria-pressed", "false");
        const image = document.createElement("img");
        image.src = sample.url;
        image.alt = "";
        const name = document.createElement("span");
        name.textContent = sample.name;
        button.append(image, name);
        button.addEventListener("click", () =>
          this.choose({ kind: "sample", value: sample.name, label: sample.name, url: sample.url }),
        );
        return button;
      }),
    );
  }

  chooseFile(file) {
    // Refuse here what the server would refuse, without sending megabytes first.
    if (file.size > this.uploadLimit) {
      const mib = (this.uploadLimit / 2 ** 20).toFixed(1);
      this.onError(new PageError("error.too_large", { name: file.name, mib }));
      return;
    }
    this.choose({ kind: "file", value: file, label: file.name });
  }

  choose(choice) {
    this.current = choice;
    for (const button of this.samplesEl.querySelectorAll("button")) {
      const pressed = choice.kind === "sample" && button.dataset.sample === choice.value;
      button.setAttribute("aria-pressed", String(pressed));
    }
    this.onChange(choice);
  }

  // The API's image field for the current choice: {sample}, {url} or {file}.
  fields() {
    if (!this.current) return null;
    return { [this.current.kind]: this.current.value };
  }

  // The current photo's bytes as a Blob, read by the browser itself: a file as it is, a
  // sample from the server, an image URL from its host (which must allow it: CORS).
  async blob() {
    const { kind, value, url } = this.current;
    if (kind === "file") return value;
    let response;
    try {
      response = await fetch(kind === "sample" ? url : value);
    } catch {
      throw new PageError("error.cors", { url: value });
    }
    if (!response.ok) throw new Error(`${value}: ${response.status} ${response.statusText}`);
    return response.blob();
  }
}
