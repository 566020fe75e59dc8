/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
   vmemsim: a Valgrind tool that records every memory access of the client
   in the text format of `valgrind --tool=lackey --trace-mem=yes`, but
   buffered: lines are collected in memory and written to Valgrind's log
   in large chunks instead of with one write(2) per line.

   Copyright (C) 2026 the vmemsim authors.

   This program is free software; you can redistribute it and/or
   modify it under the terms of the GNU General Public License as
   published by the Free Software Foundation; either version 2 of the
   License, or (at your option) any later version.

   This program is distributed in the hope that it will be useful, but
   WITHOUT ANY WARRANTY; without even the implied warranty of
   MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.  See the GNU
   General Public License for more details.

   You should have received a copy of the GNU General Public License
   along with this program; if not, see <http://www.gnu.org/licenses/>.

   It is linked with Valgrind's libcoregrind and libvex (GPL-2.0-or-later)
   and is therefore a separate program under the GPL; see README.md in this
   directory.  It was written against Valgrind's public tool interface
   (pub_tool_*.h, libvex_ir.h).

   What is recorded (the lines lackey --trace-mem=yes prints):
     "I  ADDR,SIZE"  an instruction fetch (one per guest instruction),
     " L ADDR,SIZE"  a load, " S ADDR,SIZE" a store,
     " M ADDR,SIZE"  a load immediately followed by a store of the same
                     address and size within one group of pending events
                     (a read-modify-write),
   ADDR in lower-case hex with at least 8 digits, SIZE in decimal.
   Loads and stores include dirty helpers' declared memory effects, a
   compare-and-swap counts as a load then a store of its (double) width,
   load-linked as a load and store-conditional as a store; guarded loads
   and stores are recorded only when their guard holds.

   Events are emitted exactly where lackey emits them: per superblock they
   are queued in groups of at most four and each group becomes helper
   calls placed before the fifth event, before every side exit, after a
   load-linked and at the end of the block.  So a faulting instruction
   leaves the same lines as with lackey, and read-modify-write merging
   sees the same neighbours.

   Ordering with Valgrind's own output (--trace-syscalls lines, messages):
   the buffer is written out whenever the thread stops running client code
   (before every system call, signal delivery, thread switch and client
   request), before a fork, before each system call, and at exit.
*/

#include "pub_tool_basics.h"
#include "pub_tool_tooliface.h"
#include "pub_tool_libcassert.h"
#include "pub_tool_libcprint.h"
#include "pub_tool_libcfile.h"
#include "pub_tool_libcproc.h"
#include "pub_tool_machine.h"
#include "pub_tool_options.h"
#include "pub_tool_vki.h"

/* Valgrind's log sink (coregrind's OutputSink): its first member is the
   log's file descriptor (-1 when logging is off) in every Valgrind since
   3.0; the core updates it when it reopens the log (after a fork with
   %p in --log-file).  Read at every flush. */
extern struct { Int fd; } vgPlain_log_output_sink;

/* ------------------------------------------------------------------ */
/* The output buffer                                                   */
/* ------------------------------------------------------------------ */

/* Bytes of text collected before a write: large, so that writing costs a
   few system calls per megabyte. */
#define OUT_BYTES (1 << 20)
/* The longest line: "I  " + 16 hex digits + "," + 20 decimal digits + "\n". */
#define LINE_MAX_BYTES 48

static HChar out_buf[OUT_BYTES];
static UInt out_used = 0;

static void write_all(const HChar* p, UInt n)
{
   Int fd = vgPlain_log_output_sink.fd;
   if (fd < 0)
      return;
   while (n > 0) {
      Int w = VG_(write)(fd, p, n);
      if (w > 0) {
         p += w;
         n -= (UInt)w;
      } else if (w == -VKI_EINTR || w == -VKI_EAGAIN) {
         continue;
      } else {
         /* The log is gone (a closed pipe, a full disk): as lackey, whose
            writes would fail too, drop the text. */
         return;
      }
   }
}

static void flush_out(void)
{
   if (out_used > 0) {
      UInt n = out_used;
      out_used = 0;
      write_all(out_buf, n);
   }
}

static const HChar hex_digits[16] = {
   '0', '1', '2', '3', '4', '5', '6', '7',
   '8', '9', 'a', 'b', 'c', 'd', 'e', 'f'
};

/* Append "PREFIX ADDR,SIZE\n", PREFIX being 3 bytes ("I  ", " L " ...),
   ADDR formatted as %08lx and SIZE as %lu. */
static inline void put_line(HChar k0, HChar k1, Addr addr, SizeT size)
{
   HChar* p;
   HChar tmp[24];
   Int n, i;
   if (UNLIKELY(out_used > OUT_BYTES - LINE_MAX_BYTES))
      flush_out();
   p = out_buf + out_used;
   p[0] = k0;
   p[1] = k1;
   p[2] = ' ';
   p += 3;
   /* Hex digits needed, at least 8. */
   n = 8;
   {
      Addr rest = addr >> 32;
      while (rest != 0) {
         n++;
         rest >>= 4;
      }
   }
   for (i = n - 1; i >= 0; i--) {
      p[i] = hex_digits[addr & 0xf];
      addr >>= 4;
   }
   p += n;
   *p++ = ',';
   if (size < 10) {
      *p++ = (HChar)('0' + size);
   } else {
      n = 0;
      while (size != 0) {
         tmp[n++] = (HChar)('0' + size % 10);
         size /= 10;
      }
      while (n > 0)
         *p++ = tmp[--n];
   }
   *p++ = '\n';
   out_used = (UInt)(p - out_buf);
}

static VG_REGPARM(2) void vms_instr(Addr addr, SizeT size)
{
   put_line('I', ' ', addr, size);
}

static VG_REGPARM(2) void vms_load(Addr addr, SizeT size)
{
   put_line(' ', 'L', addr, size);
}

static VG_REGPARM(2) void vms_store(Addr addr, SizeT size)
{
   put_line(' ', 'S', addr, size);
}

static VG_REGPARM(2) void vms_modify(Addr addr, SizeT size)
{
   put_line(' ', 'M', addr, size);
}

/* ------------------------------------------------------------------ */
/* Instrumentation                                                     */
/* ------------------------------------------------------------------ */

typedef enum { Ev_Instr, Ev_Load, Ev_Store, Ev_Modify } EvKind;

typedef struct {
   EvKind  kind;
   IRExpr* addr;
   Int     size;
   IRExpr* guard; /* NULL: unconditional */
} PendingEv;

/* Events of the current superblock not yet turned into helper calls. */
#define GROUP_EVENTS 4
static PendingEv pending[GROUP_EVENTS];
static Int n_pending = 0;

static void emit_pending(IRSB* sb)
{
   Int i;
   for (i = 0; i < n_pending; i++) {
      PendingEv* ev = &pending[i];
      const HChar* name;
      void* fn;
      IRExpr** args;
      IRDirty* di;
      switch (ev->kind) {
         case Ev_Instr:  name = "vms_instr";  fn = vms_instr;  break;
         case Ev_Load:   name = "vms_load";   fn = vms_load;   break;
         case Ev_Store:  name = "vms_store";  fn = vms_store;  break;
         case Ev_Modify: name = "vms_modify"; fn = vms_modify; break;
         default: tl_assert(0);
      }
      args = mkIRExprVec_2(ev->addr, mkIRExpr_HWord((HWord)ev->size));
      di = unsafeIRDirty_0_N(2, name, VG_(fnptr_to_fnentry)(fn), args);
      if (ev->guard != NULL)
         di->guard = ev->guard;
      addStmtToIRSB(sb, IRStmt_Dirty(di));
   }
   n_pending = 0;
}

static void queue(IRSB* sb, EvKind kind, IRExpr* addr, Int size,
                  IRExpr* guard)
{
   tl_assert(isIRAtom(addr));
   tl_assert(guard == NULL || isIRAtom(guard));
   if (n_pending == GROUP_EVENTS)
      emit_pending(sb);
   pending[n_pending].kind = kind;
   pending[n_pending].addr = addr;
   pending[n_pending].size = size;
   pending[n_pending].guard = guard;
   n_pending++;
}

static void queue_store(IRSB* sb, IRExpr* addr, Int size, IRExpr* guard)
{
   /* An unconditional store to the address and size of the event just
      queued, an unconditional load, makes that load a modify. */
   if (guard == NULL && n_pending > 0) {
      PendingEv* last = &pending[n_pending - 1];
      if (last->kind == Ev_Load && last->size == size && last->guard == NULL
          && eqIRAtom(last->addr, addr)) {
         last->kind = Ev_Modify;
         return;
      }
   }
   queue(sb, Ev_Store, addr, size, guard);
}

static IRSB* vms_instrument(VgCallbackClosure* closure, IRSB* sbIn,
                            const VexGuestLayout* layout,
                            const VexGuestExtents* vge,
                            const VexArchInfo* archinfo_host,
                            IRType gWordTy, IRType hWordTy)
{
   IRSB* sbOut;
   IRTypeEnv* tyenv = sbIn->tyenv;
   Int i;

   if (gWordTy != hWordTy)
      VG_(tool_panic)("host/guest word size mismatch");

   sbOut = deepCopyIRSBExceptStmts(sbIn);
   n_pending = 0;

   /* Statements before the first instruction mark are Valgrind's own. */
   i = 0;
   while (i < sbIn->stmts_used && sbIn->stmts[i]->tag != Ist_IMark) {
      addStmtToIRSB(sbOut, sbIn->stmts[i]);
      i++;
   }

   for (; i < sbIn->stmts_used; i++) {
      IRStmt* st = sbIn->stmts[i];
      if (st == NULL || st->tag == Ist_NoOp)
         continue;
      switch (st->tag) {
         case Ist_IMark: {
            Int len = (Int)st->Ist.IMark.len;
            tl_assert((len >= VG_MIN_INSTR_SZB && len <= VG_MAX_INSTR_SZB)
                      || len == VG_CLREQ_SZB);
            queue(sbOut, Ev_Instr,
                  mkIRExpr_HWord((HWord)st->Ist.IMark.addr), len, NULL);
            addStmtToIRSB(sbOut, st);
            break;
         }
         case Ist_WrTmp: {
            IRExpr* e = st->Ist.WrTmp.data;
            if (e->tag == Iex_Load)
               queue(sbOut, Ev_Load, e->Iex.Load.addr,
                     sizeofIRType(e->Iex.Load.ty), NULL);
            addStmtToIRSB(sbOut, st);
            break;
         }
         case Ist_Store: {
            IRExpr* data = st->Ist.Store.data;
            queue_store(sbOut, st->Ist.Store.addr,
                        sizeofIRType(typeOfIRExpr(tyenv, data)), NULL);
            addStmtToIRSB(sbOut, st);
            break;
         }
         case Ist_StoreG: {
            IRStoreG* sg = st->Ist.StoreG.details;
            queue_store(sbOut, sg->addr,
                        sizeofIRType(typeOfIRExpr(tyenv, sg->data)),
                        sg->guard);
            addStmtToIRSB(sbOut, st);
            break;
         }
         case Ist_LoadG: {
            IRLoadG* lg = st->Ist.LoadG.details;
            IRType loaded = Ity_INVALID, widened = Ity_INVALID;
            typeOfIRLoadGOp(lg->cvt, &widened, &loaded);
            tl_assert(loaded != Ity_INVALID);
            queue(sbOut, Ev_Load, lg->addr, sizeofIRType(loaded), lg->guard);
            addStmtToIRSB(sbOut, st);
            break;
         }
         case Ist_Dirty: {
            IRDirty* d = st->Ist.Dirty.details;
            if (d->mFx != Ifx_None) {
               tl_assert(d->mAddr != NULL && d->mSize != 0);
               if (d->mFx == Ifx_Read || d->mFx == Ifx_Modify)
                  queue(sbOut, Ev_Load, d->mAddr, d->mSize, NULL);
               if (d->mFx == Ifx_Write || d->mFx == Ifx_Modify)
                  queue_store(sbOut, d->mAddr, d->mSize, NULL);
            }
            addStmtToIRSB(sbOut, st);
            break;
         }
         case Ist_CAS: {
            IRCAS* cas = st->Ist.CAS.details;
            Int size = sizeofIRType(typeOfIRExpr(tyenv, cas->dataLo));
            if (cas->dataHi != NULL)
               size *= 2;
            queue(sbOut, Ev_Load, cas->addr, size, NULL);
            queue_store(sbOut, cas->addr, size, NULL);
            addStmtToIRSB(sbOut, st);
            break;
         }
         case Ist_LLSC: {
            if (st->Ist.LLSC.storedata == NULL) {
               IRType t = typeOfIRTemp(tyenv, st->Ist.LLSC.result);
               queue(sbOut, Ev_Load, st->Ist.LLSC.addr, sizeofIRType(t), NULL);
               /* No helper call between a load-linked and its
                  store-conditional's statement group: emit now. */
               emit_pending(sbOut);
            } else {
               IRType t = typeOfIRExpr(tyenv, st->Ist.LLSC.storedata);
               queue_store(sbOut, st->Ist.LLSC.addr, sizeofIRType(t), NULL);
            }
            addStmtToIRSB(sbOut, st);
            break;
         }
         case Ist_Exit:
            emit_pending(sbOut);
            addStmtToIRSB(sbOut, st);
            break;
         default:
            addStmtToIRSB(sbOut, st);
            break;
      }
   }
   emit_pending(sbOut);
   return sbOut;
}

/* ------------------------------------------------------------------ */
/* Flush points                                                        */
/* ------------------------------------------------------------------ */

static void vms_stop_client_code(ThreadId tid, ULong blocks)
{
   flush_out();
}

static void vms_pre_syscall(ThreadId tid, UInt no, UWord* args, UInt n)
{
   flush_out();
}

static void vms_post_syscall(ThreadId tid, UInt no, UWord* args, UInt n,
                             SysRes res)
{
}

static void vms_atfork_pre(ThreadId tid)
{
   flush_out();
}

static void vms_atfork_child(ThreadId tid)
{
   /* Empty after the pre-fork flush; the parent's text is the parent's. */
   out_used = 0;
}

/* ------------------------------------------------------------------ */
/* Set-up and exit                                                     */
/* ------------------------------------------------------------------ */

static void vms_post_clo_init(void)
{
}

static void vms_fini(Int exitcode)
{
   flush_out();
   /* The closing line the recorder's parser takes as the end of a log. */
   VG_(umsg)("Exit code:       %d\n", exitcode);
}

static void vms_pre_clo_init(void)
{
   VG_(details_name)("vmemsim");
   VG_(details_version)(NULL);
   VG_(details_description)("vmemsim's memory-access recorder (lackey "
                            "--trace-mem=yes lines, buffered)");
   VG_(details_copyright_author)("Copyright (C) 2026 the vmemsim authors; "
                                 "GPL-2.0-or-later.");
   VG_(details_bug_reports_to)(VG_BUGS_TO);
   VG_(details_avg_translation_sizeB)(200);

   VG_(basic_tool_funcs)(vms_post_clo_init, vms_instrument, vms_fini);
   VG_(needs_syscall_wrapper)(vms_pre_syscall, vms_post_syscall);
   VG_(track_stop_client_code)(vms_stop_client_code);
   VG_(atfork)(vms_atfork_pre, NULL, vms_atfork_child);
}

VG_DETERMINE_INTERFACE_VERSION(vms_pre_clo_init)
