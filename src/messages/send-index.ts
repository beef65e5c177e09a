/**
 * Send Message's view of the message index: the pair's known direct chats, the
 * room a group address names, the room of a message a read report is about, and the sent event
 * written at once — by the same ingestion as a transaction, so fetch and push see one message.
 */
import type { Logger } from 'pino'
import type { MatrixClient } from '../matrix/client.ts'
import type { ClientEvent } from '../matrix/event.ts'
import type { MessageIndex } from './index-store.ts'
import { ingestEvent, type IngestContext } from './ingest.ts'
import type { SendIndex } from './send.ts'

/** How many of a new room's first events are read to learn it before the stream brings them. */
const NEW_ROOM_EVENTS = 30

export function createSendIndex(deps: {
  index: MessageIndex
  matrix: MatrixClient
  context: () => Omit<IngestContext, 'now'>
  now: () => number
}): SendIndex {
  const { index } = deps

  /** A conversation's current room: its last upgrade. */
  async function currentRoom(roomId: string): Promise<string> {
    let id = roomId
    for (let hops = 0; hops < 20; hops++) {
      const successor = (await index.rooms([id])).get(id)?.successor
      if (successor === undefined) return id
      id = successor
    }
    return id
  }

  return {
    directRooms: (userId, peer) => index.directRooms(userId, peer),
    isEnrolled: (userId) => index.isEnrolled(userId),
    async groupRoom(userId, address) {
      const conversation = await index.conversationOf(userId, address)
      return conversation === undefined ? undefined : currentRoom(conversation)
    },
    async deliveredRoom(userId, eventId) {
      if ((await index.deliverySeq(userId, eventId)) === undefined) return undefined
      return (await index.message(eventId))?.roomId
    },
    async recordSent(event: ClientEvent, log: Logger) {
      // A room the proxy just created is not in the index yet (its events are still on their way
      // from Synapse), and a room is classified once: its first events are read as the sender and
      // applied first, so it is known as the direct chat it is. Only while the index knows nothing
      // of the room, checked inside the write: once the stream has begun, it wins.
      const known = (await index.rooms([event.room_id])).has(event.room_id)
      const opening = known ? [] : (await deps.matrix.roomMessages(event.sender, event.room_id, { dir: 'f', limit: NEW_ROOM_EVENTS })).chunk
      // The message itself as a race fill for the sender (enrolled by the send): their other
      // devices see it at once. Synapse's echo then delivers it, in room order, to the others.
      const ctx = { ...deps.context(), now: deps.now(), fillFor: event.sender }
      const outcome = await index.write(async (tx) => {
        if (opening.length > 0 && (await tx.getRoom(event.room_id)) === undefined) {
          for (const e of opening) if (e.event_id !== event.event_id) await ingestEvent(tx, e, ctx, 'stream')
        }
        return ingestEvent(tx, event, ctx, 'fill')
      })
      log.debug({ event_id: event.event_id, outcome, room_events_applied: opening.length }, 'sent message indexed')
    },
  }
}
