// The idenprof page: send each photo to /api/predict, draw the top-5 bars and the heat map.
// Plain browser JavaScript, no build step, and no request leaves this server.
"use strict";

const results = document.getElementById("results");
const statusLine = document.getElementById("status");
const drop = document.getElementById("drop");
const TOP = 5;

function percent(probability) {
  if (probability < 0.0005) return "<0.1%";
  return (probability * 100).toFixed(probability >= 0.9995 ? 0 : 1) + "%";
}

async function askServer(file, className) {
  const form = new FormData();
  form.append("image", file, file.name || "pasted.png");
  const query = new URLSearchParams({ top: TOP, heatmap: "true" });
  if (className) query.set("class", className);
  const response = await fetch("/api/predict?" + query, { method: "POST", body: form });
  let answer;
  try {
    answer = await response.json();
  } catch {
    throw new Error("the server answered " + response.status);
  }
  if (!response.ok) throw new Error(answer.error || "the server answered " + response.status);
  return answer;
}

function showHeatmap(card, answer) {
  const heatmap = card.querySelector(".heatmap");
  if (answer.heatmap) {
    heatmap.src = answer.heatmap;
    heatmap.alt = "heat map for " + answer.heatmap_class;
    card.querySelector(".heat-caption").textContent = "where it sees: " + answer.heatmap_class;
  }
  for (const bar of card.querySelectorAll(".bar")) {
    bar.setAttribute("aria-pressed", String(bar.dataset.class === answer.heatmap_class));
  }
}

function drawBars(card, file, answer) {
  const bars = card.querySelector(".bars");
  bars.replaceChildren();
  for (const { class: name, probability } of answer.predictions) {
    const item = document.createElement("li");
    const bar = document.createElement("button");
    bar.type = "button";
    bar.className = "bar";
    bar.dataset.class = name;
    bar.title = "show where it sees " + name;
    const label = Object.assign(document.createElement("span"), { className: "label", textContent: name });
    const track = Object.assign(document.createElement("span"), { className: "track" });
    const fill = Object.assign(document.createElement("span"), { className: "fill" });
    fill.style.display = "block";
    fill.style.width = (probability * 100).toFixed(2) + "%";
    track.append(fill);
    const value = Object.assign(document.createElement("span"), { className: "percent", textContent: percent(probability) });
    bar.append(label, track, value);
    bar.addEventListener("click", () => heatmapFor(card, file, name));
    item.append(bar);
    bars.append(item);
  }
  // A photo of none of the professions gets a plain message, not a confident bar chart; its
  // guesses and heat map stay one click away.
  const none = card.querySelector(".none");
  none.hidden = !answer.none_of_these;
  bars.hidden = answer.none_of_these;
  card.querySelector(".pictures figure:nth-child(2)").hidden = answer.none_of_these;
  card.querySelector(".unsure").hidden = answer.none_of_these || !answer.unsure;
  // The prediction set above the bars: "chef or waiter (90% sets)".
  const set = card.querySelector(".set");
  set.hidden = answer.none_of_these || !answer.prediction_set;
  if (answer.prediction_set) {
    const names = answer.prediction_set.classes;
    card.querySelector(".set-classes").textContent =
      names.length === 1 ? names[0] : names.slice(0, -1).join(", ") + " or " + names[names.length - 1];
    card.querySelector(".set-coverage").textContent = "(" + percent(answer.prediction_set.coverage).replace(/\.0%$/, "%") + " sets)";
  }
  if (answer.none_of_these) {
    card.querySelector(".none-score").textContent = answer.none_score.toFixed(2);
    none.querySelector(".show-guesses").onclick = () => {
      none.hidden = true;
      bars.hidden = false;
      set.hidden = !answer.prediction_set;
      card.querySelector(".pictures figure:nth-child(2)").hidden = false;
    };
  }
}

async function heatmapFor(card, file, name) {
  card.querySelector(".heat-caption").textContent = "heat map for " + name + "…";
  try {
    showHeatmap(card, await askServer(file, name));
  } catch (error) {
    showError(card, error);
  }
}

function showError(card, error) {
  const line = card.querySelector(".error");
  line.textContent = error.message;
  line.hidden = false;
}

async function classify(file) {
  const card = document.getElementById("card").content.firstElementChild.cloneNode(true);
  const photo = card.querySelector(".photo");
  photo.src = URL.createObjectURL(file);
  card.querySelector(".name").textContent = file.name || "pasted image";
  results.prepend(card);
  try {
    const answer = await askServer(file);
    drawBars(card, file, answer);
    showHeatmap(card, answer);
  } catch (error) {
    card.querySelector(".heat-caption").textContent = "";
    showError(card, error);
  }
}

async function classifyAll(files) {
  const images = [...files].filter((file) => !file.type || file.type.startsWith("image/"));
  if (!images.length) {
    statusLine.textContent = "That was not an image: choose a photo (JPEG, PNG, WebP, BMP, GIF).";
    return;
  }
  statusLine.textContent = "Looking at " + images.length + (images.length > 1 ? " photos…" : " photo…");
  await Promise.all(images.map(classify));
  statusLine.textContent = "";
}

document.getElementById("files").addEventListener("change", (event) => {
  classifyAll(event.target.files);
  event.target.value = "";
});
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
}
for (const name of ["dragleave", "drop"]) {
  drop.addEventListener(name, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  classifyAll(event.dataTransfer.files);
});
document.addEventListener("paste", (event) => {
  const files = [...(event.clipboardData?.items || [])]
    .filter((item) => item.kind === "file")
    .map((item) => item.getAsFile());
  if (files.length) classifyAll(files);
});
