/**
 * A read cache over one write transaction of the index: a transaction of 100 messages asks the
 * same few questions (the room, its enrolled members, the author, the user's address) for every
 * event. Each write through the wrapper drops or replaces what it changes; `clear()` is for when a
 * savepoint was rolled back (what the cache saw may have been undone).
 */
import type { IndexTx } from './index-store.ts'

export function cachedTx(tx: IndexTx): IndexTx & { clear(): void } {
  const cache = new Map<string, unknown>()
  const memo = <T>(key: string, load: () => Promise<T>): Promise<T> => {
    if (cache.has(key)) return Promise.resolve(cache.get(key) as T)
    return load().then((value) => {
      cache.set(key, value)
      return value
    })
  }
  const dropPrefix = (prefix: string) => {
    for (const key of cache.keys()) if (key.startsWith(prefix)) cache.delete(key)
  }
  return {
    ...tx,
    clear: () => cache.clear(),
    getRoom: (roomId) => memo(`room\u0000${roomId}`, () => tx.getRoom(roomId)),
    updateRoom: async (roomId, fields, now) => {
      cache.delete(`room\u0000${roomId}`)
      const room = await tx.updateRoom(roomId, fields, now)
      cache.set(`room\u0000${roomId}`, room)
      return room
    },
    getMember: (roomId, userId) => memo(`member\u0000${roomId}\u0000${userId}`, () => tx.getMember(roomId, userId)),
    setMember: async (member) => {
      cache.delete(`member\u0000${member.roomId}\u0000${member.userId}`)
      cache.delete(`enrolledMembers\u0000${member.roomId}`)
      cache.delete(`members\u0000${member.roomId}`)
      await tx.setMember(member)
    },
    members: (roomId) => memo(`members\u0000${roomId}`, () => tx.members(roomId)),
    enrolledMembers: (roomId) => memo(`enrolledMembers\u0000${roomId}`, () => tx.enrolledMembers(roomId)),
    isEnrolled: (userId) => memo(`enrolled\u0000${userId}`, () => tx.isEnrolled(userId)),
    enrol: async (userId, now) => {
      cache.delete(`enrolled\u0000${userId}`)
      dropPrefix('enrolledMembers\u0000')
      return tx.enrol(userId, now)
    },
    currentAddress: (userId, conversation) => memo(`address\u0000${userId}\u0000${conversation}`, () => tx.currentAddress(userId, conversation)),
    assignAddress: async (userId, address, conversation, now) => {
      cache.delete(`address\u0000${userId}\u0000${conversation}`)
      await tx.assignAddress(userId, address, conversation, now)
    },
  }
}
