// The classes of a Teach project and their samples: one card per class, with its name (edit
// it to rename the class), its thumbnails (each with a delete button), a file button
// (several files), a drop zone (files or whole folders), and a HOLD-to-record button for
// the webcam. The card last clicked is the "current" class: pasted images go there.
//
// Cards are kept, not redrawn, when the project changes (update() adds and removes what
// differs): a burst being recorded keeps its button under the pointer.

import { msg, say, t } from "../i18n.js";
import { holdToRecord } from "./teach_camera.js";

const IMAGE = /^image\//;

// Every file under a dropped item: a file as it is, a folder walked to its leaves.
async function filesOf(entry) {
  if (entry.isFile) {
    return [await new Promise((resolve, reject) => entry.file(resolve, reject))];
  }
  if (!entry.isDirectory) return [];
  const nested = await Promise.all((await childrenOf(entry)).map(filesOf));
  return nested.flat();
}

const isImage = (file) =>
  IMAGE.test(file.type) || /\.(jpe?g|png|gif|bmp|webp)$/i.test(file.name);

function entriesOf(dataTransfer) {
  return Array.from(dataTransfer.items ?? [])
    .map((item) => item.webkitGetAsEntry?.())
    .filter(Boolean);
}

async function childrenOf(folder) {
  const reader = folder.createReader();
  const children = [];
  for (;;) {
    const page = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!page.length) return children;
    children.push(...page);
  }
}

// The image files a drop carries, folders included.
export async function droppedImages(dataTransfer) {
  const entries = entriesOf(dataTransfer);
  const files = entries.length
    ? (await Promise.all(entries.map(filesOf))).flat()
    : Array.from(dataTransfer.files);
  return files.filter(isImage);
}

// A drop on the class list, as class name -> image files: a folder of class folders
// (imgrec's layout, and the samples' zip unpacked) gives a class per subfolder; a folder
// of images, a class of its name; loose files go to `current` (none: they are left out).
export async function droppedClasses(dataTransfer, current) {
  const found = new Map();
  const add = (name, files) => {
    const images = files.filter(isImage);
    if (name && images.length) found.set(name, [...(found.get(name) ?? []), ...images]);
  };
  for (const entry of entriesOf(dataTransfer)) {
    if (entry.isFile) {
      add(current, await filesOf(entry));
      continue;
    }
    const children = await childrenOf(entry);
    const folders = children.filter((child) => child.isDirectory);
    if (!folders.length) {
      add(entry.name, (await Promise.all(children.map(filesOf))).flat());
      continue;
    }
    for (const folder of folders) add(folder.name, await filesOf(folder));
  }
  return found;
}

function button(className, message) {
  const element = document.createElement("button");
  element.type = "button";
  element.className = className;
  say(element, message);
  return element;
}

export class ClassList {
  // handlers: onAdd(className, files), onRename(old, new), onDelete(className),
  // onDeleteSample(className, sample), onError(error).
  constructor(container, camera, handlers) {
    this.container = container;
    this.camera = camera;
    this.handlers = handlers;
    this.cards = new Map(); // class name -> {card, thumbs, count, hold, input}
    this.current = null;
  }

  get names() {
    return [...this.cards.keys()];
  }

  clear() {
    this.cards.clear();
    this.current = null;
    this.container.replaceChildren();
  }

  // Show `classes` ([{name, samples: [Sample]}]), keeping the cards already shown.
  update(classes) {
    const wanted = new Set(classes.map((entry) => entry.name));
    for (const [name, view] of this.cards) {
      if (!wanted.has(name)) {
        view.card.remove();
        this.cards.delete(name);
      }
    }
    classes.forEach((entry, i) => {
      const view = this.cards.get(entry.name) ?? this.addCard(entry.name);
      // In the project's order; a card already in place is not moved (moving it would
      // take the pointer away from a HOLD button in the middle of a burst).
      const there = this.container.children[i];
      if (there !== view.card) this.container.insertBefore(view.card, there ?? null);
      this.showSamples(view, entry);
    });
    if (!this.cards.has(this.current)) this.select(classes[0]?.name ?? null);
    this.setCamera(this.camera.on);
  }

  // The card of a class renamed on the server now answers to its new name.
  rename(old, name) {
    const view = this.cards.get(old);
    if (!view) return;
    this.cards.delete(old);
    this.cards.set(name, view);
    view.name = name;
    view.card.dataset.class = name;
    view.input.value = name;
    if (this.current === old) this.current = name;
  }

  select(name) {
    this.current = name;
    for (const [key, view] of this.cards) {
      view.card.setAttribute("aria-current", String(key === name));
    }
  }

  // Enable the HOLD buttons while the camera runs.
  setCamera(on) {
    for (const view of this.cards.values()) view.hold.disabled = !on;
  }

  addCard(name) {
    const card = document.createElement("div");
    card.className = "class-card";
    card.dataset.class = name;
    const view = { name, card };

    const head = document.createElement("div");
    head.className = "class-head";
    view.input = document.createElement("input");
    view.input.type = "text";
    view.input.className = "class-rename";
    view.input.value = name;
    view.input.maxLength = 64;
    say(view.input, msg("teach.rename"), "aria-label");
    view.input.addEventListener("change", () => {
      const wanted = view.input.value.trim();
      if (!wanted || wanted === view.name) {
        view.input.value = view.name;
        return;
      }
      this.handlers.onRename(view.name, wanted, () => (view.input.value = view.name));
    });
    view.count = document.createElement("span");
    view.count.className = "count";
    const remove = button("delete-class", msg("teach.delete_class"));
    remove.addEventListener("click", () => {
      if (window.confirm(t("teach.confirm_delete_class", { name: view.name }))) {
        this.handlers.onDelete(view.name);
      }
    });
    head.append(view.input, view.count, remove);

    const actions = document.createElement("div");
    actions.className = "class-actions";
    view.hold = button("hold", msg("teach.hold"));
    view.hold.disabled = true;
    holdToRecord(view.hold, this.camera, {
      onStart: () => this.select(view.name),
      onFrame: (blob) => this.handlers.onAdd(view.name, [blob]),
    });
    const upload = document.createElement("label");
    upload.className = "file-button";
    const files = document.createElement("input");
    files.type = "file";
    files.multiple = true;
    files.accept = "image/*";
    files.className = "class-files";
    files.addEventListener("change", () => {
      if (files.files.length) this.handlers.onAdd(view.name, Array.from(files.files));
      files.value = "";
    });
    const uploadText = document.createElement("span");
    say(uploadText, msg("teach.upload"));
    upload.append(files, uploadText);
    actions.append(view.hold, upload);

    view.thumbs = document.createElement("div");
    view.thumbs.className = "thumbs";
    const hint = document.createElement("p");
    hint.className = "note drop-hint";
    say(hint, msg("teach.drop_hint"));

    card.append(head, actions, view.thumbs, hint);
    card.addEventListener("pointerdown", () => this.select(view.name));
    card.addEventListener("focusin", () => this.select(view.name));
    this.listenForDrops(view);
    this.cards.set(name, view);
    return view;
  }

  listenForDrops(view) {
    const { card } = view;
    for (const type of ["dragenter", "dragover"]) {
      card.addEventListener(type, (event) => {
        event.preventDefault();
        card.classList.add("over");
      });
    }
    card.addEventListener("dragleave", () => card.classList.remove("over"));
    card.addEventListener("drop", async (event) => {
      event.preventDefault();
      event.stopPropagation(); // not a drop on the list as well
      card.classList.remove("over");
      this.select(view.name);
      try {
        const images = await droppedImages(event.dataTransfer);
        if (images.length) this.handlers.onAdd(view.name, images);
      } catch (error) {
        this.handlers.onError(error);
      }
    });
  }

  showSamples(view, entry) {
    say(view.count, msg("teach.sample_count", { count: entry.samples.length }));
    view.card.dataset.samples = String(entry.samples.length);
    const shown = new Map(
      Array.from(view.thumbs.children).map((figure) => [figure.dataset.sample, figure]),
    );
    const wanted = new Set(entry.samples.map((sample) => sample.id));
    for (const [id, figure] of shown) if (!wanted.has(id)) figure.remove();
    for (const sample of entry.samples) {
      if (shown.has(sample.id)) continue;
      view.thumbs.append(this.thumbnail(view, sample));
    }
  }

  thumbnail(view, sample) {
    const figure = document.createElement("figure");
    figure.className = "thumb";
    figure.dataset.sample = sample.id;
    const image = document.createElement("img");
    image.src = sample.thumbnail;
    image.alt = "";
    image.loading = "lazy";
    const remove = button("delete-sample", msg("teach.delete_sample_short"));
    say(remove, msg("teach.delete_sample"), "aria-label");
    remove.addEventListener("click", () => this.handlers.onDeleteSample(view.name, sample));
    figure.append(image, remove);
    return figure;
  }
}
