/**
 * geventchannels browser client as an ES module:
 *
 *   import { WebSocketBridge } from "/static/geventchannels/js/websocketbridge.js";
 *
 * The code is websocketbridge.classic.js (one copy for both ways of loading it): importing
 * it runs it once, and it leaves its names on globalThis.geventchannels.
 */
import "./websocketbridge.classic.js";

export const { RECONNECT_CODES, DEFAULT_OPTIONS, resolveUrl, WebSocketBridge } = globalThis.geventchannels;
