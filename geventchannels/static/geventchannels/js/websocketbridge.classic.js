/**
 * geventchannels browser client: one WebSocket that reconnects by itself, queues what is
 * sent while it is down, and carries several streams ({"stream": ..., "payload": ...},
 * as WebsocketDemultiplexer expects).
 *
 *   import { WebSocketBridge } from "/static/geventchannels/js/websocketbridge.js";
 *   // or <script src=".../websocketbridge.classic.js"> and window.geventchannels.WebSocketBridge
 *   const bridge = new WebSocketBridge();
 *   bridge.demultiplex("chat", (payload, stream) => show(payload));
 *   bridge.connect("/chat/");
 *   bridge.stream("chat").send({ text: "hello" });
 *
 * This file is the whole client, usable as a classic <script> (it sets
 * window.geventchannels, and window.channels.WebSocketBridge, 1.x's global, when free);
 * websocketbridge.js is the ES module that re-exports it.
 */
(function (global) {
"use strict";

/** Close codes after which the bridge reconnects: the server went away or restarts
 * (1001, 1012), the connection broke (1006), the server failed or was overloaded (1011,
 * 1013). Others (1000, 1008, 4000-4999...) are the application's decision and final. */
const RECONNECT_CODES = [1001, 1006, 1011, 1012, 1013];

const DEFAULT_OPTIONS = {
  protocols: undefined,
  reconnectCodes: RECONNECT_CODES,
  /** Milliseconds before the first retry; each further retry waits `factor` times more,
   * up to `maxDelay`, and a random part of each wait (up to half) spreads clients out. */
  minDelay: 1000,
  maxDelay: 30000,
  factor: 2,
  /** Retries in a row before the bridge gives up (reset by each successful open). */
  maxRetries: Infinity,
  /** Milliseconds a connection attempt may take before it is dropped and retried. */
  connectTimeout: 10000,
  /** Messages kept while disconnected; send() returns false and drops the message when
   * the queue is full. */
  queueLimit: 100,
};

/** The WebSocket URL for `path` seen from `base` (the page): relative paths are resolved
 * against it, and http/https become ws/wss. */
function resolveUrl(path, base) {
  const url = new URL(path === undefined ? "/" : path, base === undefined ? location.href : base);
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  url.hash = "";
  return url.href;
}

class WebSocketBridge {
  constructor(options) {
    this.options = Object.assign({}, DEFAULT_OPTIONS, options);
    this.url = null;
    /** The current WebSocket (null before connect()). */
    this.socket = null;
    /** True while a retry is scheduled. */
    this.reconnecting = false;
    /** Hooks: onopen(event), onclose(event, {reconnect, delay}), onmessage(event) (every
     * message, before it is demultiplexed), onerror(event). */
    this.onopen = null;
    this.onclose = null;
    this.onmessage = null;
    this.onerror = null;
    this.streams = {};
    this.defaultCallback = null;
    this.attempts = 0;
    this.queue = [];
    this.finished = false;
    this.timer = null;
  }

  /** Open the socket to `url` (default "/", resolved against the page). */
  connect(url, protocols, options) {
    if (options) Object.assign(this.options, options);
    if (protocols !== undefined) this.options.protocols = protocols;
    this.url = resolveUrl(url);
    const previous = this.socket;
    if (previous && previous.readyState <= WebSocket.OPEN) {
      this.socket = null;
      previous.close();
    }
    this.finished = false;
    this.attempts = 0;
    this.open();
    return this;
  }

  /** Close for good (no reconnect); what is still queued is dropped. */
  close(code, reason) {
    this.finished = true;
    this.stopRetrying();
    this.queue.length = 0;
    const socket = this.socket;
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(code || 1000, reason);
  }

  /** Handle messages that are not on a stream: callback(message, null). Messages are
   * JSON-decoded when they are JSON. */
  listen(callback) {
    this.defaultCallback = callback;
    return this;
  }

  /** Handle the messages of one stream: callback(payload, stream). */
  demultiplex(stream, callback) {
    this.streams[stream] = callback;
    return this;
  }

  /** Send `message` as JSON; queued while disconnected. False if it was dropped (the
   * queue is full, or the bridge was closed for good). */
  send(message) {
    return this.sendText(JSON.stringify(message));
  }

  /** An object whose send(payload) sends on `stream`. */
  stream(name) {
    return { send: (payload) => this.send({ stream: name, payload: payload }) };
  }

  /** How many messages wait for the connection. */
  get queued() {
    return this.queue.length;
  }

  sendText(text) {
    const socket = this.socket;
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(text);
      return true;
    }
    if (this.finished || this.queue.length >= this.options.queueLimit) return false;
    this.queue.push(text);
    return true;
  }

  open() {
    this.stopRetrying();
    const socket = new WebSocket(this.url, this.options.protocols);
    this.socket = socket;
    const timeout = setTimeout(() => {
      if (socket.readyState === WebSocket.CONNECTING) socket.close();
    }, this.options.connectTimeout);
    socket.onopen = (event) => {
      clearTimeout(timeout);
      this.attempts = 0;
      while (this.queue.length && socket.readyState === WebSocket.OPEN) {
        socket.send(this.queue.shift());
      }
      if (this.onopen) this.onopen(event);
    };
    socket.onmessage = (event) => this.receive(event);
    socket.onerror = (event) => {
      if (this.onerror) this.onerror(event);
    };
    socket.onclose = (event) => {
      clearTimeout(timeout);
      if (this.socket !== socket) return;
      let delay = null;
      if (this.shouldReconnect(event.code)) {
        delay = this.nextDelay();
        this.attempts += 1;
        this.reconnecting = true;
        this.timer = setTimeout(() => this.open(), delay);
      } else {
        this.finished = true;
        this.queue.length = 0;
      }
      if (this.onclose) this.onclose(event, { reconnect: delay !== null, delay: delay });
    };
  }

  shouldReconnect(code) {
    return (
      !this.finished &&
      this.attempts < this.options.maxRetries &&
      this.options.reconnectCodes.indexOf(code) !== -1
    );
  }

  nextDelay() {
    const o = this.options;
    const full = Math.min(o.maxDelay, o.minDelay * Math.pow(o.factor, this.attempts));
    return full / 2 + (Math.random() * full) / 2;
  }

  stopRetrying() {
    clearTimeout(this.timer);
    this.timer = null;
    this.reconnecting = false;
  }

  receive(event) {
    if (this.onmessage) this.onmessage(event);
    let message = event.data;
    if (typeof message === "string") {
      try {
        message = JSON.parse(message);
      } catch (error) {
        // Not JSON: handed over as the text it is.
      }
    }
    if (message !== null && typeof message === "object" && typeof message.stream === "string"
        && "payload" in message) {
      const callback = this.streams[message.stream];
      if (callback) callback(message.payload, message.stream);
    } else if (this.defaultCallback) {
      this.defaultCallback(message, null);
    }
  }
}

global.geventchannels = { RECONNECT_CODES: RECONNECT_CODES, DEFAULT_OPTIONS: DEFAULT_OPTIONS, resolveUrl: resolveUrl, WebSocketBridge: WebSocketBridge };
if (global.channels === undefined) global.channels = { WebSocketBridge: WebSocketBridge };
})(globalThis);
