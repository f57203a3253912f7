// Node-side client helpers for the tests: a TandemClient on the `ws`
// package, optionally with its own User-Agent (device_type comes from it).

import WebSocket from 'ws'
import * as Y from 'yjs'

import { TandemClient } from '../src/index.js'

export const USER_AGENTS = {
  desktop: 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36',
  mobile: 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1',
}

/**
 * @param {string} wsUrl
 * @param {object} options TandemClient options, plus userAgent
 */
export function nodeClient(wsUrl, { userAgent, ...options } = {}) {
  if (!userAgent) return new TandemClient(wsUrl, { WebSocket, ...options })
  const createWebSocket = (url) => new WebSocket(url, { headers: { 'User-Agent': userAgent } })
  return new TandemClient(wsUrl, { createWebSocket, ...options })
}

/** A client joined to `documentId` with a fresh Y.Doc, synced. */
export async function joinedClient(gateway, user, documentId, options = {}) {
  const { name = user, ...rest } = options
  const client = nodeClient(gateway.wsUrl, { token: () => gateway.token(user, { name }), ...rest })
  const doc = new Y.Doc()
  const room = client.join(documentId, { doc })
  await room.synced
  return { client, doc, room, text: doc.getText('content') }
}
