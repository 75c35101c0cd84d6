/**
 * The trajectory player: particles moving over time, drawn on a canvas at display rate.
 *
 * One ES module with anywidget's contract `render({model, el})`, used unchanged by the
 * Jupyter widget (anywidget) and by the Panel component (`AnyWidgetComponent`). The
 * model holds the whole animation in one binary message, `trajectory` (its layout is
 * documented in `trajectory.py`), so playing needs no round trip to Python: every
 * animation frame the playhead moves by `speed × elapsed seconds` steps, and the frame
 * draws each particle between its parent at the step before and itself at the step
 * after, so motion is smooth at any speed and offspring visibly split from their parent
 * when the particles are resampled.
 *
 * Trails come from never clearing the plot: each frame first veils its pixels with
 * white, so what was drawn t seconds ago keeps exp(-t / trail_seconds) of its darkness,
 * then blends the particles into them (see `drawParticles` for why pixels, not shapes).
 *
 * For tests the root element carries `data-frames` (frames drawn while playing),
 * `data-step` (the step shown), `data-playing` and `data-draw-ms` (a running average of
 * the milliseconds spent drawing a frame).
 */

const FORMAT_VERSION = 1;
const HEADER_BYTES = 32;
const HAS_WEIGHTS = 1;
const HAS_ANCESTORS = 2;
const HAS_TIMES = 4;

const SPEEDS = [1, 2, 5, 10, 20, 50, 100]; // steps per second offered by the selector
const WEIGHT_LEVELS = 6; // weighted dots come in this many sizes and opacities
const MAX_ANCESTOR_LINES = 500; // parent-to-child lines drawn at a resampling step
const PARTICLE_RGB = [31, 119, 180];
const ANCESTOR_COLOR = "rgba(255, 127, 14, 0.25)";
const MARGIN = { left: 56, right: 14, top: 12, bottom: 42 };
const FONT = "12px sans-serif";

/** The message's sections as typed arrays over its buffer, plus what the player derives. */
function readTrajectory(view) {
  if (!view || view.byteLength < HEADER_BYTES) return null;
  let buffer = view.buffer;
  let offset = view.byteOffset;
  if (offset % 4 !== 0) {
    // typed arrays need aligned starts; copy the (rare) unaligned buffer once
    buffer = new Uint8Array(buffer, offset, view.byteLength).slice().buffer;
    offset = 0;
  }
  const [version, steps, particles, flags] = new Int32Array(buffer, offset, 4);
  if (version !== FORMAT_VERSION) {
    throw new Error(`trajectory message version ${version}; this player reads ${FORMAT_VERSION}`);
  }
  const bounds = Array.from(new Float32Array(buffer, offset + 16, 4));
  let at = offset + HEADER_BYTES;
  const take = (Type, count) => {
    const array = new Type(buffer, at, count);
    at += 4 * count;
    return array;
  };
  const values = steps * particles;
  const positions = take(Float32Array, 2 * values);
  const weights = flags & HAS_WEIGHTS ? take(Float32Array, values) : null;
  const ancestors = flags & HAS_ANCESTORS ? take(Int32Array, values) : null;
  const times = flags & HAS_TIMES ? take(Float32Array, steps) : null;
  return {
    steps, particles, bounds, positions, ancestors, times,
    relativeWeights: weights && relativeWeights(weights, steps, particles),
    ...resamplingSteps(ancestors, steps, particles),
  };
}

/** W_s^i / max_j W_s^j: each step's weights on [0, 1], so any normalisation draws alike. */
function relativeWeights(weights, steps, particles) {
  const relative = new Float32Array(weights.length);
  for (let s = 0; s < steps; s++) {
    const row = weights.subarray(s * particles, (s + 1) * particles);
    let largest = 0;
    for (let i = 0; i < particles; i++) largest = Math.max(largest, row[i]);
    for (let i = 0; i < particles; i++) relative[s * particles + i] = row[i] / largest;
  }
  return relative;
}

/** Which steps resampled (ancestors not 0, 1, …, N-1), and how many parents had children. */
function resamplingSteps(ancestors, steps, particles) {
  const resampled = new Uint8Array(steps);
  const parents = new Int32Array(steps).fill(particles);
  if (!ancestors) return { resampled, parents };
  const seen = new Uint8Array(particles);
  for (let s = 1; s < steps; s++) {
    const row = ancestors.subarray(s * particles, (s + 1) * particles);
    let moved = false;
    for (let i = 0; i < particles; i++) moved ||= row[i] !== i;
    if (!moved) continue;
    resampled[s] = 1;
    seen.fill(0);
    let distinct = 0;
    for (let i = 0; i < particles; i++) {
      if (!seen[row[i]]) { seen[row[i]] = 1; distinct++; }
    }
    parents[s] = distinct;
  }
  return { resampled, parents };
}

/** The message's bounds, widened on one axis when `equal` so that a unit of x and a
 * unit of y take the same number of pixels (circles stay round). */
function viewBounds([x0, x1, y0, y1], width, height, equal) {
  if (!equal) return [x0, x1, y0, y1];
  const unit = Math.max((x1 - x0) / width, (y1 - y0) / height); // data units per pixel
  const [cx, cy] = [(x0 + x1) / 2, (y0 + y1) / 2];
  return [cx - (unit * width) / 2, cx + (unit * width) / 2, cy - (unit * height) / 2,
    cy + (unit * height) / 2];
}

/** About `count` round tick values covering [low, high] (1, 2 or 5 times a power of ten). */
function niceTicks(low, high, count = 5) {
  const raw = (high - low) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = power * ([1, 2, 5, 10].find((m) => m * power >= raw) ?? 10);
  const ticks = [];
  for (let v = Math.ceil(low / step) * step; v <= high + 1e-9 * step; v += step) {
    ticks.push(Math.abs(v) < 1e-12 * step ? 0 : v);
  }
  return { ticks, digits: Math.max(0, -Math.floor(Math.log10(step))) };
}

function element(tag, className, parent, properties = {}) {
  const node = Object.assign(document.createElement(tag), properties);
  if (className) node.className = className;
  parent.appendChild(node);
  return node;
}

function render({ model, el }) {
  const root = element("div", "plw-player", el);
  const stage = element("div", "plw-stage", root);
  const axesCanvas = element("canvas", "plw-axes", stage);
  const plotCanvas = element("canvas", "plw-plot", stage);
  const controls = element("div", "plw-controls", root);
  const playButton = element("button", "plw-play", controls, { type: "button" });
  const scrubber = element("input", "plw-scrub", controls, { type: "range", min: 0, step: 1 });
  const speedSelect = element("select", "plw-speed", controls, { title: "steps per second" });
  const label = element("span", "plw-label", controls);
  const axes = axesCanvas.getContext("2d");
  const plot = plotCanvas.getContext("2d", { alpha: false });

  let data = null;
  let playhead = 0; // fractional step index
  let frames = 0;
  let drawMilliseconds = 0; // running average of the time spent drawing one frame
  let lastTime = null;
  let frameRequest = null;
  let size = { width: 0, height: 0, plotWidth: 0, plotHeight: 0 };
  let picture = null; // the plot's pixels, in device pixels, kept between frames
  let view = [0, 1, 0, 1]; // the axes' ranges: the data's bounds, made equal-aspect if asked
  const fadedLevel = new Uint8ClampedArray(256);
  let xs = new Float32Array(0);
  let ys = new Float32Array(0);
  let levels = new Uint8Array(0);

  // ------------------------------------------------------------------ geometry
  /** Size the canvases to the element's width (an equal-aspect plot only as wide as its
   * data need), and draw the axes and the current step. */
  function redraw() {
    const width = Math.max(200, Math.floor(el.clientWidth || root.clientWidth || 600));
    const height = model.get("canvas_height");
    const plotHeight = height - MARGIN.top - MARGIN.bottom;
    let plotWidth = width - MARGIN.left - MARGIN.right;
    if (data && model.get("equal_aspect")) {
      const [x0, x1, y0, y1] = data.bounds;
      plotWidth = Math.min(plotWidth, Math.round((plotHeight * (x1 - x0)) / (y1 - y0)));
    }
    if (width !== size.width || height !== size.height || plotWidth !== size.plotWidth) {
      const ratio = window.devicePixelRatio || 1;
      size = { width, height, plotWidth, plotHeight };
      stage.style.height = `${height}px`;
      const canvases = [[axesCanvas, width, height], [plotCanvas, plotWidth, plotHeight]];
      for (const [canvas, w, h] of canvases) {
        canvas.width = Math.round(w * ratio);
        canvas.height = Math.round(h * ratio);
        canvas.style.width = `${w}px`;
        canvas.style.height = `${h}px`;
      }
      plotCanvas.style.left = `${MARGIN.left}px`;
      plotCanvas.style.top = `${MARGIN.top}px`;
      axes.setTransform(ratio, 0, 0, ratio, 0, 0);
      picture = plot.createImageData(plotCanvas.width, plotCanvas.height);
    }
    drawAxes();
    drawStill();
  }

  function drawAxes() {
    const { width, height, plotWidth, plotHeight } = size;
    if (data) view = viewBounds(data.bounds, plotWidth, plotHeight, model.get("equal_aspect"));
    axes.clearRect(0, 0, width, height);
    axes.font = FONT;
    axes.fillStyle = "#333";
    axes.strokeStyle = "#999";
    axes.strokeRect(MARGIN.left - 0.5, MARGIN.top - 0.5, plotWidth + 1, plotHeight + 1);
    if (!data) return;
    const [x0, x1, y0, y1] = view;
    const x = niceTicks(x0, x1);
    axes.textAlign = "center";
    axes.textBaseline = "top";
    for (const v of x.ticks) {
      const px = MARGIN.left + ((v - x0) / (x1 - x0)) * plotWidth;
      axes.fillRect(px, MARGIN.top + plotHeight, 1, 4);
      axes.fillText(v.toFixed(x.digits), px, MARGIN.top + plotHeight + 6);
    }
    const y = niceTicks(y0, y1);
    axes.textAlign = "right";
    axes.textBaseline = "middle";
    for (const v of y.ticks) {
      const py = MARGIN.top + (1 - (v - y0) / (y1 - y0)) * plotHeight;
      axes.fillRect(MARGIN.left - 4, py, 4, 1);
      axes.fillText(v.toFixed(y.digits), MARGIN.left - 6, py);
    }
    axes.textAlign = "center";
    axes.textBaseline = "bottom";
    axes.fillText(model.get("x_label"), MARGIN.left + plotWidth / 2, height - 2);
    axes.save();
    axes.translate(12, MARGIN.top + plotHeight / 2);
    axes.rotate(-Math.PI / 2);
    axes.textBaseline = "middle";
    axes.fillText(model.get("y_label"), 0, 0);
    axes.restore();
  }

  // ------------------------------------------------------------------ drawing
  /** Veil the picture so that older marks fade: keep exp(-dt / τ) of their darkness. */
  function fade(seconds) {
    const tau = model.get("trail_seconds");
    const veil = tau > 0 ? 1 - Math.exp(-seconds / tau) : 1;
    const channels = picture.data;
    if (veil >= 1) {
      channels.fill(255);
      return;
    }
    // One lookup table per frame for the 256 levels; + 1: rounding to 8 bits would
    // otherwise stall a few levels short of white.
    for (let level = 0; level < 256; level++) fadedLevel[level] = level + (255 - level) * veil + 1;
    for (let k = 0; k < channels.length; k += 4) {
      channels[k] = fadedLevel[channels[k]];
      channels[k + 1] = fadedLevel[channels[k + 1]];
      channels[k + 2] = fadedLevel[channels[k + 2]];
    }
  }

  /** Device-pixel positions and weight classes of every particle at the step `at`. */
  function placeParticles(at) {
    const { steps, particles, positions, ancestors, relativeWeights: relative } = data;
    const [x0, x1, y0, y1] = view;
    const sx = picture.width / (x1 - x0);
    const sy = picture.height / (y1 - y0);
    const before = Math.min(Math.floor(at), steps - 1);
    const after = Math.min(before + 1, steps - 1);
    const f = after === before ? 0 : at - before;
    const uniformBefore = data.resampled[after] === 1; // resampling resets the weights
    for (let i = 0; i < particles; i++) {
      const parent = ancestors && f > 0 ? ancestors[after * particles + i] : i;
      const p = 2 * (before * particles + parent);
      const q = 2 * (after * particles + i);
      xs[i] = (positions[p] + f * (positions[q] - positions[p]) - x0) * sx;
      ys[i] = (y1 - positions[p + 1] - f * (positions[q + 1] - positions[p + 1])) * sy;
      if (relative) {
        const w0 = uniformBefore && f > 0 ? 1 : relative[before * particles + parent];
        const w = w0 + f * (relative[after * particles + i] - w0);
        levels[i] = Math.min(WEIGHT_LEVELS - 1, Math.floor(w * WEIGHT_LEVELS));
      }
    }
    return { before, after, f };
  }

  /**
   * Blend each particle's square dot into the picture's pixels: side and opacity grow
   * with its weight class. Writing pixels directly costs a few multiplications per pixel
   * covered, where ten thousand canvas shapes would cost more than a frame to rasterise.
   */
  function drawParticles() {
    const { width, height, data: channels } = picture;
    const ratio = window.devicePixelRatio || 1;
    const weighted = Boolean(data.relativeWeights);
    const baseOpacity = Math.min(0.9, Math.max(0.15, 30 / Math.sqrt(data.particles)));
    const classes = weighted ? WEIGHT_LEVELS : 1;
    const sides = [];
    const opacities = [];
    for (let level = 0; level < classes; level++) {
      const share = (level + 1) / classes;
      sides.push(Math.max(1, Math.round(ratio * (weighted ? 1.5 + 3 * share : 2.5))));
      opacities.push(baseOpacity * (0.3 + 0.7 * share));
    }
    for (let i = 0; i < data.particles; i++) {
      const level = weighted ? levels[i] : 0;
      const side = sides[level];
      const alpha = opacities[level];
      const x = Math.round(xs[i] - side / 2); // the dot's top-left pixel
      const y = Math.round(ys[i] - side / 2);
      const [left, right] = [Math.max(0, x), Math.min(width, x + side)];
      const [top, bottom] = [Math.max(0, y), Math.min(height, y + side)];
      for (let row = top; row < bottom; row++) {
        for (let k = 4 * (row * width + left), end = 4 * (row * width + right); k < end; k += 4) {
          channels[k] += (PARTICLE_RGB[0] - channels[k]) * alpha;
          channels[k + 1] += (PARTICLE_RGB[1] - channels[k + 1]) * alpha;
          channels[k + 2] += (PARTICLE_RGB[2] - channels[k + 2]) * alpha;
        }
      }
    }
  }

  /** While a resampling step plays, lines from each parent to its children (a subset
   * if there are many), drawn over the picture for the frames of that step only. */
  function drawAncestorLines(before, after) {
    const { particles, positions, ancestors } = data;
    const [x0, x1, y0, y1] = view;
    const sx = picture.width / (x1 - x0);
    const sy = picture.height / (y1 - y0);
    const stride = Math.max(1, Math.ceil(particles / MAX_ANCESTOR_LINES));
    plot.strokeStyle = ANCESTOR_COLOR;
    plot.lineWidth = window.devicePixelRatio || 1;
    plot.beginPath();
    for (let i = 0; i < particles; i += stride) {
      const p = 2 * (before * particles + ancestors[after * particles + i]);
      plot.moveTo((positions[p] - x0) * sx, (y1 - positions[p + 1]) * sy);
      plot.lineTo(xs[i], ys[i]);
    }
    plot.stroke();
  }

  function drawFrame(seconds) {
    const start = performance.now();
    fade(seconds);
    if (data) {
      const { before, after, f } = placeParticles(playhead);
      drawParticles();
      plot.putImageData(picture, 0, 0);
      if (f > 0 && data.resampled[after]) drawAncestorLines(before, after);
    } else {
      plot.putImageData(picture, 0, 0);
    }
    drawMilliseconds += 0.1 * (performance.now() - start - drawMilliseconds);
    root.dataset.drawMs = drawMilliseconds.toFixed(2);
  }

  /** The current step on a clean plot (paused, scrubbed, resized or new data). */
  function drawStill() {
    if (!picture) return;
    drawFrame(Infinity);
    if (!data) {
      plot.fillStyle = "#666";
      plot.font = FONT;
      plot.textAlign = "center";
      plot.fillText("No trajectory yet", picture.width / 2, picture.height / 2);
    }
    showStep();
  }

  // ------------------------------------------------------------------ controls
  function showStep() {
    const step = data ? Math.min(Math.floor(playhead), data.steps - 1) : 0;
    const last = data ? data.steps - 1 : 0;
    let text = `step ${step} / ${last}`;
    if (data?.times) text += ` · t = ${data.times[step].toFixed(3)}`;
    if (data?.resampled[step]) {
      text += ` · resampled: ${data.parents[step]} of ${data.particles} particles have children`;
    }
    if (label.textContent !== text) label.textContent = text;
    if (Number(scrubber.value) !== step) scrubber.value = String(step);
    root.dataset.step = String(step);
    label.classList.toggle("plw-resampled", Boolean(data?.resampled[step]));
  }

  function showPlaying() {
    const playing = model.get("playing");
    playButton.textContent = playing ? "❚❚ Pause" : "▶ Play";
    root.dataset.playing = String(playing);
  }

  function fillSpeeds() {
    const current = model.get("speed");
    const speeds = SPEEDS.includes(current) ? SPEEDS : [...SPEEDS, current].sort((a, b) => a - b);
    speedSelect.replaceChildren(
      ...speeds.map((v) => Object.assign(document.createElement("option"), {
        value: String(v), textContent: `${v} steps/s`, selected: v === current,
      })),
    );
  }

  function setPlaying(playing) {
    model.set("playing", playing);
    model.save_changes();
    followPlaying();
  }

  // ------------------------------------------------------------------ playback
  function tick(now) {
    frameRequest = null;
    if (!data || !model.get("playing")) return;
    let seconds = lastTime === null ? 0 : Math.min(0.25, (now - lastTime) / 1000);
    lastTime = now;
    playhead += model.get("speed") * seconds;
    const end = data.steps - 1;
    if (playhead >= end) {
      if (model.get("loop") && end > 0) {
        playhead = 0;
        seconds = Infinity; // a clean start, not a trail across the whole plot
      } else {
        playhead = end;
        drawFrame(seconds);
        frames++;
        root.dataset.frames = String(frames);
        setPlaying(false);
        return;
      }
    }
    drawFrame(seconds);
    frames++;
    root.dataset.frames = String(frames);
    showStep();
    frameRequest = requestAnimationFrame(tick);
  }

  function followPlaying() {
    showPlaying();
    if (model.get("playing") && data && frameRequest === null) {
      if (playhead >= data.steps - 1) playhead = 0;
      lastTime = null;
      frameRequest = requestAnimationFrame(tick);
    } else if (!model.get("playing") && frameRequest !== null) {
      cancelAnimationFrame(frameRequest);
      frameRequest = null;
    }
    if (!model.get("playing")) drawStill();
  }

  function loadTrajectory() {
    try {
      data = readTrajectory(model.get("trajectory"));
    } catch (error) {
      data = null;
      console.error(error);
    }
    const particles = data ? data.particles : 0;
    xs = new Float32Array(particles);
    ys = new Float32Array(particles);
    levels = new Uint8Array(particles);
    playhead = 0;
    scrubber.max = String(data ? data.steps - 1 : 0);
    scrubber.disabled = !data;
    playButton.disabled = !data;
    redraw();
    followPlaying();
  }

  playButton.addEventListener("click", () => setPlaying(!model.get("playing")));
  scrubber.addEventListener("input", () => {
    playhead = Number(scrubber.value);
    if (!model.get("playing")) drawStill();
  });
  speedSelect.addEventListener("change", () => {
    model.set("speed", Number(speedSelect.value));
    model.save_changes();
  });

  const listeners = {
    "change:trajectory": loadTrajectory,
    "change:playing": followPlaying,
    "change:speed": fillSpeeds,
    "change:canvas_height": redraw,
    "change:x_label": drawAxes,
    "change:y_label": drawAxes,
    "change:equal_aspect": redraw,
  };
  for (const [event, listener] of Object.entries(listeners)) model.on(event, listener);
  const observer = new ResizeObserver(redraw);
  observer.observe(el);

  root.dataset.frames = "0";
  fillSpeeds();
  loadTrajectory();

  return () => {
    observer.disconnect();
    if (frameRequest !== null) cancelAnimationFrame(frameRequest);
    for (const [event, listener] of Object.entries(listeners)) model.off(event, listener);
  };
}

export default { render };
