"""Byte transports for frame-protocol devices: a TCP client and a serial port.

A transport only moves bytes; :class:`~firmware_interface.frame_source.FrameSource` decodes them and handles
reconnects. ``recv`` waits at most ``timeout`` seconds and returns ``b""`` when nothing arrived, so the reader
thread can notice a stop request or a silent device; it raises :class:`SourceError` when the link is gone.
pyserial is imported only when a serial port is opened.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Any, Protocol

from firmware_interface.errors import SourceError

logger = logging.getLogger(__name__)


class Transport(Protocol):
    """What :class:`~firmware_interface.frame_source.FrameSource` needs from a link."""

    description: str

    def open(self) -> None: ...

    def recv(self, max_bytes: int, timeout: float) -> bytes: ...

    def close(self) -> None: ...


class TcpTransport:
    """TCP client to a device or to :class:`~firmware_interface.emulator.FrameEmulator`.

    Parameters
    ----------
    host : str
    port : int
    connect_timeout : float
        Seconds to wait for the connection.
    """

    def __init__(self, host: str, port: int, connect_timeout: float = 3.0) -> None:
        self.host = host
        self.port = int(port)
        self.connect_timeout = float(connect_timeout)
        self.description = f"tcp {host}:{port}"
        self._sock: socket.socket | None = None

    def open(self) -> None:
        self.close()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as exc:
            raise SourceError(f"could not connect to {self.host}:{self.port}: {exc}. Check that the device "
                              "or `edge-bridge emulate` is running and listening on that port") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock

    def recv(self, max_bytes: int, timeout: float) -> bytes:
        sock = self._sock
        if sock is None:
            raise SourceError(f"{self.description}: not connected")
        sock.settimeout(timeout)
        try:
            data = sock.recv(max_bytes)
        except TimeoutError:
            return b""
        except OSError as exc:
            raise SourceError(f"{self.description}: connection failed: {exc}") from exc
        if not data:
            raise SourceError(f"{self.description}: the device closed the connection")
        return data

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


class SerialTransport:
    """Serial port (USB CDC, UART) via pyserial.

    Parameters
    ----------
    port : str
        ``/dev/ttyACM0``, ``/dev/ttyUSB0``, ``COM3``.
    baudrate : int
        Ignored by USB CDC devices, essential for UARTs.
    """

    def __init__(self, port: str, baudrate: int = 115200) -> None:
        self.port = port
        self.baudrate = int(baudrate)
        self.description = f"serial {port}@{baudrate}"
        self._ser: Any = None

    def open(self) -> None:
        self.close()
        try:
            import serial
        except ImportError as exc:
            raise SourceError("serial devices need pyserial; install it with `pip install pyserial`") from exc
        try:
            self._ser = serial.Serial(self.port, self.baudrate, timeout=0.1)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise SourceError(f"could not open serial port {self.port} at {self.baudrate} baud: {exc}. Check "
                              "the port name (ls /dev/ttyACM* /dev/ttyUSB*), that no other program holds it "
                              "and that your user may open it (the dialout group on Linux)") from exc

    def recv(self, max_bytes: int, timeout: float) -> bytes:
        ser = self._ser
        if ser is None:
            raise SourceError(f"{self.description}: not open")
        try:
            ser.timeout = timeout
            data = ser.read(1)  # waits up to timeout for the first byte
            if data:
                waiting = min(int(ser.in_waiting), max_bytes - 1)
                if waiting > 0:
                    data += ser.read(waiting)
        except Exception as exc:  # pyserial raises SerialException or OSError when the device is unplugged
            raise SourceError(f"{self.description}: read failed: {exc}") from exc
        return bytes(data)

    def close(self) -> None:
        ser, self._ser = self._ser, None
        if ser is not None:
            try:
                ser.close()
            except Exception as exc:  # closing an unplugged device may fail; nothing left to do
                logger.debug("closing %s: %s", self.description, exc)
